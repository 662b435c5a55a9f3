package layout

// A sale's Redis keys. Every key of a sale is "{sale:<id>}:<suffix>", so
// that one hash tag keeps all of them in one slot and the Lua scripts run
// on Redis Cluster. Everything that names a sale's key (the store and its
// scripts' KEYS, the order stream and its consumer, reconciliation, the
// invariant checker, flashctl) builds it here.
//
//	{sale:ID}:ledger      hash: fence, granted_seen, released_local, sold, reserved, halted
//	{sale:ID}:view        hash: the other regions' figures (total, others_sold, others_reserved, at)
//	{sale:ID}:users       hash: units held per user
//	{sale:ID}:req         hash: requestId -> reservation id
//	{sale:ID}:resv:<id>   hash: one reservation
//	{sale:ID}:orders      stream: reserved/confirmed/cancelled/expired events

// SaleKey names one of a sale's keys: SaleKey("s1", "ledger") is
// "{sale:s1}:ledger".
func SaleKey(sale, suffix string) string { return "{sale:" + sale + "}:" + suffix }

// StreamKey is the sale's order stream.
func StreamKey(sale string) string { return SaleKey(sale, "orders") }

// ResvKey is one reservation's hash.
func ResvKey(sale, id string) string { return SaleKey(sale, "resv:"+id) }

// GrantsChannel is where apply_grant.lua publishes a raised grant (its
// message is the sale id), so sellers refresh at once.
const GrantsChannel = "flashsale:grants"
