package layout

import "testing"

// Reports are decoded in one place: region and sale come from the key,
// whatever the document claims, and any other key is refused.
func TestDecodeReport(t *testing.T) {
	k := Keys{Prefix: DefaultPrefix}
	rep, err := k.DecodeReport([]byte(k.Report("eu", "s1")), []byte(`{"region":"us","sale":"x","sold":7,"releaseId":"s1-3"}`))
	if err != nil || rep.Region != "eu" || rep.Sale != "s1" || rep.Sold != 7 || rep.ReleaseID != "s1-3" {
		t.Fatalf("decoded %+v, %v", rep, err)
	}
	for _, key := range []string{k.Sale("s1"), k.Reports() + "eu", k.Reports() + "/s1", k.Reports() + "eu/", k.Reports() + "eu/s1/x"} {
		if _, _, ok := k.ReportKey(key); ok {
			t.Errorf("ReportKey accepted %q", key)
		}
		if _, err := k.DecodeReport([]byte(key), []byte(`{}`)); err == nil {
			t.Errorf("DecodeReport accepted %q", key)
		}
	}
	if _, err := k.DecodeReport([]byte(k.Report("eu", "s1")), []byte(`{"sold":`)); err == nil {
		t.Error("DecodeReport accepted a malformed document")
	}
}
