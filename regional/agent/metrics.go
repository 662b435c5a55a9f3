package agent

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	reportWrites prometheus.Counter     // report keys written to etcd
	leader       prometheus.Gauge       // 1 while leader
	terms        prometheus.Counter     // elections won
	stepDowns    *prometheus.CounterVec // terms ended, by reason
	grants       prometheus.Counter     // ApplyGrant calls
	releases     prometheus.Counter     // release scripts run
	lostWrites   prometheus.Counter     // reconciliations of a Redis that lost writes
	errors       prometheus.Counter     // failed reconcile passes (Redis or etcd errors)
}

func newMetrics(reg prometheus.Registerer, region string) (*metrics, error) {
	labels := prometheus.Labels{"region": region}
	opts := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: "flashsale", Subsystem: "agent", Name: name, Help: help, ConstLabels: labels}
	}
	m := &metrics{
		reportWrites: prometheus.NewCounter(prometheus.CounterOpts(opts("report_writes_total",
			"Region reports written to etcd (one per sale key put); unchanged reports are skipped until the refresh interval."))),
		leader: prometheus.NewGauge(prometheus.GaugeOpts(opts("leader",
			"1 while this agent leads its region."))),
		terms: prometheus.NewCounter(prometheus.CounterOpts(opts("terms_total",
			"Elections this agent won."))),
		stepDowns: prometheus.NewCounterVec(prometheus.CounterOpts(opts("step_downs_total",
			"Terms that ended, by reason: deposed (stale fence in Redis or failed etcd compare), session (lease lost), error, closed.")),
			[]string{"reason"}),
		grants: prometheus.NewCounter(prometheus.CounterOpts(opts("grants_applied_total",
			"Grant max-merges sent to Redis."))),
		releases: prometheus.NewCounter(prometheus.CounterOpts(opts("releases_total",
			"Release scripts run for pending release requests (repeats of an id included)."))),
		lostWrites: prometheus.NewCounter(prometheus.CounterOpts(opts("lost_writes_total",
			"Times Redis counters were found below what etcd last heard and the region was halted and reconciled."))),
		errors: prometheus.NewCounter(prometheus.CounterOpts(opts("errors_total",
			"Reconcile passes for a sale that failed on a Redis or etcd error (retried next tick)."))),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.reportWrites, m.leader, m.terms, m.stepDowns, m.grants, m.releases, m.lostWrites, m.errors} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register agent metrics for region %s: %w", region, err)
		}
	}
	return m, nil
}
