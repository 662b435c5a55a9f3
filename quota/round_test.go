package quota

import (
	"reflect"
	"testing"
)

// roundSale is a sale with eu asked to release 20 of its 60 units.
func roundSale(t *testing.T) (*Allocation, ReleaseRequest) {
	t.Helper()
	a := NewAllocation("s", 100, "eu", "us")
	if err := a.Grant("eu", 60); err != nil {
		t.Fatal(err)
	}
	if err := a.Grant("us", 40); err != nil {
		t.Fatal(err)
	}
	req, err := a.RequestRelease("eu", 20, "us")
	if err != nil {
		t.Fatal(err)
	}
	return a, req
}

// A round that takes an ack asks its write to compare the revision of the
// report the ack came from; with the negative-control switch it does not.
func TestRoundComparesTheAckedReport(t *testing.T) {
	for _, bug := range []bool{false, true} {
		before, req := roundSale(t)
		a := before.Clone()
		reps := map[string]StoredReport{
			"eu": {Report: Report{ReleasedLocal: 20, GrantedSeen: 60, At: 5}, ReleaseID: req.ID, Rev: 42},
			"us": {Report: Report{GrantedSeen: 40, At: 5}, Rev: 43},
		}
		rd, err := a.Round(before, reps, Situation{Now: 10, Learning: true}, RoundBugs{AckWithoutReportRevision: bug})
		if err != nil {
			t.Fatal(err)
		}
		if !rd.Changed || a.Regions["eu"].Released != 20 || a.Regions["eu"].Pending != nil {
			t.Fatalf("bug=%t: the ack was not taken: changed %t, eu %+v", bug, rd.Changed, a.Regions["eu"])
		}
		if len(rd.Actions.Grants) != 1 || rd.Actions.Grants[0] != (Grant{Region: "us", Units: 20}) {
			t.Errorf("bug=%t: grants %v, want 20 to us on the ack", bug, rd.Actions.Grants)
		}
		want := map[string]int64{"eu": 42}
		if bug {
			want = nil
		}
		if len(rd.AckedRevs) != len(want) || rd.AckedRevs["eu"] != want["eu"] {
			t.Errorf("bug=%t: acked revisions %v, want %v", bug, rd.AckedRevs, want)
		}
	}
}

// Report-only rounds write nothing; a report naming another release is
// no ack; a malformed ack is refused and the round goes on.
func TestRoundWritesOnlyCounterChanges(t *testing.T) {
	before, req := roundSale(t)
	a := before.Clone()
	rd, err := a.Round(before, map[string]StoredReport{
		"eu": {Report: Report{Sold: 3, ReleasedLocal: 20, At: 5}, ReleaseID: "other", Rev: 7},
	}, Situation{Now: 10, Learning: true}, RoundBugs{})
	if err != nil {
		t.Fatal(err)
	}
	if rd.Changed || rd.AckedRevs != nil || a.Regions["eu"].Report == nil || a.Regions["eu"].Report.Sold != 3 {
		t.Fatalf("report-only round: changed %t, acked %v, eu report %+v", rd.Changed, rd.AckedRevs, a.Regions["eu"].Report)
	}
	a = before.Clone()
	rd, err = a.Round(before, map[string]StoredReport{
		"eu": {Report: Report{ReleasedLocal: 61, At: 5}, ReleaseID: req.ID, Rev: 8}, // above granted
	}, Situation{Now: 10, Learning: true}, RoundBugs{})
	if err != nil {
		t.Fatal(err)
	}
	if rd.Changed || len(rd.Refused) != 1 || a.Regions["eu"].Pending == nil {
		t.Fatalf("malformed ack: changed %t, refused %v, pending %v", rd.Changed, rd.Refused, a.Regions["eu"].Pending)
	}
}

func TestSameCounters(t *testing.T) {
	a, _ := roundSale(t)
	b := a.Clone()
	b.Regions["eu"].Report = &Report{Sold: 9}
	if !SameCounters(a, b) {
		t.Error("a report alone made the counters differ")
	}
	b.Regions["eu"].Pending = nil
	if SameCounters(a, b) {
		t.Error("a dropped pending release went unseen")
	}
	c := a.Clone()
	c.NextRelease++
	if SameCounters(a, c) {
		t.Error("a moved release sequence went unseen")
	}
}

func TestLearned(t *testing.T) {
	revs := map[string]int64{"eu": 12, "us": 9}
	for _, c := range []struct {
		name       string
		now        int64
		live       []string
		want       bool
		electedRev int64
	}{
		{"every live region reported since", 100, []string{"eu"}, true, 10},
		{"one live region has not", 100, []string{"eu", "us"}, false, 10},
		{"a region never reported", 100, []string{"eu", "ap"}, false, 10},
		{"the grace passed", 1000, []string{"eu", "us"}, true, 10},
		{"no live region", 100, nil, true, 10},
	} {
		if got := Learned(c.now, 0, 1000, c.electedRev, c.live, revs); got != c.want {
			t.Errorf("%s: Learned %t, want %t", c.name, got, c.want)
		}
	}
}

// Every field of Allocation and RegionAlloc but the reports, changed
// alone, makes SameCounters answer false: a field added later and not
// compared fails here.
func TestSameCountersSeesEveryField(t *testing.T) {
	base, _ := roundSale(t)
	base.Policy = &Policy{}
	for _, typ := range []reflect.Type{reflect.TypeFor[Allocation](), reflect.TypeFor[RegionAlloc](), reflect.TypeFor[ReleaseRequest]()} {
		for i := range typ.NumField() {
			f := typ.Field(i)
			if f.Name == "Report" {
				continue
			}
			b := base.Clone()
			var v reflect.Value
			switch typ {
			case reflect.TypeFor[Allocation]():
				v = reflect.ValueOf(b).Elem().Field(i)
			case reflect.TypeFor[RegionAlloc]():
				v = reflect.ValueOf(b.Regions["eu"]).Elem().Field(i)
			default:
				v = reflect.ValueOf(b.Regions["eu"].Pending).Elem().Field(i)
			}
			switch v.Kind() {
			case reflect.String:
				v.SetString(v.String() + "x")
			case reflect.Int64:
				v.SetInt(v.Int() + 1)
			case reflect.Bool:
				v.SetBool(!v.Bool())
			case reflect.Map:
				v.SetMapIndex(reflect.ValueOf("zz"), reflect.ValueOf(&RegionAlloc{}))
			case reflect.Pointer:
				if f.Name == "Policy" {
					b.Policy.SplitPercent++
				} else {
					v.SetZero()
				}
			default:
				t.Fatalf("%s.%s: kind %v not covered by this test", typ.Name(), f.Name, v.Kind())
			}
			if SameCounters(base, b) {
				t.Errorf("%s.%s changed, but SameCounters saw nothing", typ.Name(), f.Name)
			}
		}
	}
}
