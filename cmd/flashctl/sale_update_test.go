package main

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestSaleUpdate(t *testing.T) {
	addr := startCoordinator(t)
	conn := []string{"--addr", addr, "--token", token}
	must := mustCtl(t, conn)
	must("sale", "create", "--id", "tv", "--total", "50", "--regions", "us,eu", "--starts-at", "+1h")
	out := must("sale", "update", "tv", "--total", "80", "--weights", "us=2", "--max", "eu=30", "--starts-at", "+2h", "--ends-at", "+5h", "-o", "json")
	var got struct {
		Total   string `json:"total"`
		Regions []struct {
			Name   string `json:"name"`
			Weight string `json:"weight"`
			Max    string `json:"max"`
		} `json:"regions"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if got.Total != "80" || got.Regions[0].Weight != "2" || got.Regions[1].Max != "30" {
		t.Fatalf("updated sale: %s", out)
	}
	if table := must("sale", "get", "tv"); !strings.Contains(table, "80") || !strings.Contains(table, "us=2") {
		t.Fatalf("sale get after update:\n%s", table)
	}
	for name, c := range map[string]struct {
		args []string
		want string
	}{
		"nothing to change": {[]string{"sale", "update", "tv"}, "nothing to change"},
		"unknown region":    {[]string{"sale", "update", "tv", "--weights", "ap=1"}, `no region "ap" (it has us=2,eu)`},
		"bad weight":        {[]string{"sale", "update", "tv", "--weights", "us"}, "want region=N"},
		"zero total":        {[]string{"sale", "update", "tv", "--total", "0"}, "sale.total: 0 must be positive"},
		"unknown sale":      {[]string{"sale", "update", "nope", "--total", "5"}, "sale list"},
	} {
		if _, err := ctl(t, append(conn, c.args...)...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want one mentioning %q", name, err, c.want)
		}
	}
}
