package quota

// Learned says whether a new leader's learning mode is over: every live
// region wrote a report since its election (a report revision above
// electedRev, a clock-free "since"), or graceMs passed since it was
// elected at sinceMs. Until then it plans nothing (Situation.Learning):
// its picture of sold and demand predates it. reportRevs holds, per
// region, the newest mod revision of its reports. Times are unix ms.
func Learned(nowMs, sinceMs, graceMs, electedRev int64, live []string, reportRevs map[string]int64) bool {
	if nowMs-sinceMs >= graceMs {
		return true
	}
	for _, r := range live {
		if reportRevs[r] <= electedRev {
			return false
		}
	}
	return true
}
