package quota

import "strconv"

// errorf is fmt.Errorf for the verbs quota uses (%s %d %g %v %w): importing
// fmt would bring os and time into quota's dependencies, which its purity
// test forbids. The error wraps the %w argument, so errors.Is works.
func errorf(format string, args ...any) error {
	var b []byte
	var wrapped error
	for i := 0; i < len(format); i++ {
		c := format[i]
		if c != '%' || i+1 == len(format) {
			b = append(b, c)
			continue
		}
		i++
		if format[i] == '%' {
			b = append(b, '%')
			continue
		}
		if len(args) == 0 {
			b = append(b, "%!"+format[i:i+1]+"(MISSING)"...)
			continue
		}
		arg := args[0]
		args = args[1:]
		if e, ok := arg.(error); ok && format[i] == 'w' {
			wrapped = e
		}
		b = append(b, str(arg)...)
	}
	return &quotaError{msg: string(b), err: wrapped}
}

func str(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case int64:
		return strconv.FormatInt(v, 10)
	case int:
		return strconv.Itoa(v)
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64)
	case error:
		return v.Error()
	case nil:
		return "<nil>"
	}
	return "%!(unsupported)"
}

type quotaError struct {
	msg string
	err error
}

func (e *quotaError) Error() string { return e.msg }
func (e *quotaError) Unwrap() error { return e.err }
