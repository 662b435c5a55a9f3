// k6 version of the flash-sale buy flow (simulations/loadgen does the same
// in Go): distinct users with a home region, each buying once with a signed
// HS256 token, retrying timeouts and retryable refusals (quota_pending,
// all_reserved, ...: after retryAfterMs, else Retry-After) with the same
// requestId, following 307
// redirects to the home region, then confirming or cancelling a fraction
// of the reservations. See README.md for the variables and the Redis check.
import http from 'k6/http';
import crypto from 'k6/crypto';
import encoding from 'k6/encoding';
import exec from 'k6/execution';
import { check, fail, sleep } from 'k6';
import { Counter, Trend } from 'k6/metrics';

const ENDPOINTS = parsePairs(__ENV.ENDPOINTS || 'eu=http://127.0.0.1:8081');
const REGIONS = parseWeights(__ENV.REGIONS || Object.keys(ENDPOINTS).join(','));
const SALE = __ENV.SALE || 'demo';
const SECRET = __ENV.SECRET || __ENV.FLASHSALE_JWT_SECRET || '';
const USERS = int(__ENV.USERS, 1000000);
// USER_OFFSET starts this run's users further on, so that a second run
// against the same sale meets fresh buyers instead of already_bought.
const USER_OFFSET = int(__ENV.USER_OFFSET, 0);
const RATE = int(__ENV.RATE, 500);
const DURATION = __ENV.DURATION || '20s';
const MAX_VUS = int(__ENV.MAX_VUS, 500);
const RETRIES = int(__ENV.RETRIES, 20);
// RETRY_FOR_MS bounds the time one buyer spends retrying: a wait that would
// end later is not taken.
const RETRY_FOR_MS = int(__ENV.RETRY_FOR_MS, 30000);
const TIMEOUT = __ENV.TIMEOUT || '2s';
const MISROUTE = float(__ENV.MISROUTE, 0.05);
const CONFIRM = float(__ENV.CONFIRM, 0.5);
const CANCEL = float(__ENV.CANCEL, 0.2);
const RUN = __ENV.RUN_ID || String(Date.now());

// Open loop: arrivals at RATE per second whatever the answers' speed, as a
// crowd at the opening second would arrive; bounded by DURATION and by the
// number of distinct users.
export const options = {
  scenarios: {
    crowd: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: DURATION,
      preAllocatedVUs: Math.min(MAX_VUS, 50),
      maxVUs: MAX_VUS,
    },
  },
  thresholds: {
    // Every answer is one the API documents; anything else is a bug.
    checks: ['rate>0.99'],
    'buy_latency{outcome:sold_out}': ['p(99)<200'],
    // Latency of a single answer (retries and their waits not included).
    'answer_latency': ['p(99)<200'],
  },
  summaryTrendStats: ['count', 'p(50)', 'p(99)', 'p(99.9)', 'max'],
};

// Sold out, already bought, redirects and "retry later" are answers the API
// promises, not failures: http_req_failed then counts only the real ones.
http.setResponseCallback(http.expectedStatuses(200, 201, 307, 409, 410, 425, 429, 503));

const buyLatency = new Trend('buy_latency', true);
const answerLatency = new Trend('answer_latency', true);
// answers counts every answer by code, retries included; outcomes counts
// buyers by their last answer.
const answers = new Counter('answers');
const retriesPerBuyer = new Trend('retries_per_buyer');
const followLatency = new Trend('follow_latency', true);
const outcomes = new Counter('outcomes');
const redirects = new Counter('redirects');
const retries = new Counter('retries');

export function setup() {
  // The generator must never be aimed at a real deployment.
  for (const [region, url] of Object.entries(ENDPOINTS)) {
    if (!/^https?:\/\/(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:\d+)?$/.test(url)) {
      fail(`endpoint ${region}=${url}: only loopback hosts are allowed`);
    }
  }
  for (const r of REGIONS) {
    if (!ENDPOINTS[r.name]) fail(`region ${r.name} has users but no endpoint`);
  }
  if (SECRET !== '' && SECRET.length < 32) fail('SECRET must be at least 32 bytes');
}

export default function () {
  const seq = exec.scenario.iterationInTest;
  if (seq >= USERS) return; // each user buys once
  const user = userAt(USER_OFFSET + seq);
  const token = SECRET ? sign({ sub: user.id, home_region: user.region }) : '';
  const body = JSON.stringify({ itemId: SALE, userId: user.id, requestId: `${RUN}-${seq}` });
  let target = ENDPOINTS[user.region];
  if (frac(seq, 1) < MISROUTE) {
    const others = Object.keys(ENDPOINTS).filter((r) => r !== user.region);
    if (others.length > 0) target = ENDPOINTS[others[seq % others.length]];
  }

  let res = null;
  let took = 0;
  let attempt = 0;
  const started = Date.now();
  for (; ; attempt++) {
    if (attempt > 0) retries.add(1);
    const r = postFollowing(`${target}/v1/flash-sale/buy`, body, token);
    res = r.res;
    took += r.took;
    answerLatency.add(r.took);
    answers.add(1, { outcome: outcomeOf(res) });
    // 0: timeout or connection error: retry at once. A refusal with a
    // retry hint: retry after it. Always the same requestId.
    const wait = res.status === 0 ? 0 : retryWaitMs(res);
    if (wait < 0 || attempt >= RETRIES) break;
    if (Date.now() - started + wait > RETRY_FOR_MS) break;
    sleep(wait / 1000);
  }
  retriesPerBuyer.add(attempt);
  const outcome = outcomeOf(res);
  outcomes.add(1, { outcome });
  buyLatency.add(took, { outcome });
  check(res, {
    'buy answered with a documented status': (r) => [200, 201, 409, 410, 425, 429, 503].includes(r.status),
    'a reservation carries its id': (r) => (r.status !== 200 && r.status !== 201) || !!json(r).reservationId,
    'no redirect left unfollowed': (r) => r.status !== 307,
  });
  if (res.status !== 200 && res.status !== 201) return;

  // Pay, give up, or let it expire.
  const f = frac(seq, 2);
  let verb = '';
  if (f < CONFIRM) verb = 'confirm';
  else if (f < CONFIRM + CANCEL) verb = 'cancel';
  else return;
  const id = json(res).reservationId;
  const url = `${ENDPOINTS[user.region]}/v1/flash-sale/reservations/${encodeURIComponent(id)}/${verb}`;
  const fr = postFollowing(url, JSON.stringify({ itemId: SALE, userId: user.id }), token);
  followLatency.add(fr.took, { verb, outcome: outcomeOf(fr.res) });
  check(fr.res, { [`${verb} succeeds`]: (r) => r.status === 200 });
}

// postFollowing posts and follows up to 3 redirects by hand, so that each
// hop is counted and checked to stay on loopback.
function postFollowing(url, body, token) {
  const headers = { 'Content-Type': 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  let took = 0;
  for (let hop = 0; ; hop++) {
    const res = http.post(url, body, { headers, redirects: 0, timeout: TIMEOUT, tags: { name: url.replace(/reservations\/[^/]+/, 'reservations/{id}').replace(/^https?:\/\/[^/]+/, '') } });
    took += res.timings.duration;
    if ((res.status !== 307 && res.status !== 308) || hop === 3) return { res, took };
    const loc = res.headers.Location || res.headers.location;
    if (!loc || !/^https?:\/\/(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:\d+)?\//.test(loc)) return { res, took };
    redirects.add(1);
    url = loc;
  }
}

// retryWaitMs is how long a refusal asks us to wait: the body's jittered
// retryAfterMs when present, else Retry-After seconds; -1 for a final answer.
function retryWaitMs(res) {
  const ms = json(res).retryAfterMs;
  if (ms > 0) return ms;
  const ra = parseInt(res.headers['Retry-After'] || res.headers['retry-after'] || '', 10);
  return ra > 0 ? ra * 1000 : -1;
}

function outcomeOf(res) {
  if (res.status === 0) return 'timeout';
  if (res.status === 201 || res.status === 200) return 'reserved';
  const code = json(res).code;
  return code || `http_${res.status}`;
}

function json(res) {
  try {
    return res.json() || {};
  } catch (e) {
    return {};
  }
}

// sign makes an HS256 JWT with an hour of validity.
function sign(claims) {
  const now = Math.floor(Date.now() / 1000);
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const payload = b64url(JSON.stringify(Object.assign({ iat: now, exp: now + 3600 }, claims)));
  const input = `${head}.${payload}`;
  const sig = encoding.b64encode(crypto.hmac('sha256', SECRET, input, 'binary'), 'rawurl');
  return `${input}.${sig}`;
}

function b64url(s) {
  return encoding.b64encode(s, 'rawurl');
}

// userAt spreads users over regions by weight, deterministically: the same
// user always has the same home region.
function userAt(i) {
  const u = frac(i, 7);
  let acc = 0;
  for (const r of REGIONS) {
    acc += r.share;
    if (u < acc) return { id: `u${i}`, region: r.name };
  }
  return { id: `u${i}`, region: REGIONS[REGIONS.length - 1].name };
}

// frac is a deterministic number in [0,1) for an index and a purpose.
function frac(i, salt) {
  let h = (Math.imul(i ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(salt + 1, 0xc2b2ae35)) >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d) >>> 0;
  h ^= h >>> 15;
  h = Math.imul(h, 0x846ca68b) >>> 0;
  h ^= h >>> 16;
  return (h >>> 0) / 4294967296;
}

function parsePairs(s) {
  const out = {};
  for (const part of s.split(',')) {
    const [k, v] = part.split('=');
    if (!k || !v) throw new Error(`bad pair ${part} in ${s}: want region=url`);
    out[k.trim()] = v.trim().replace(/\/+$/, '');
  }
  return out;
}

function parseWeights(s) {
  const list = s.split(',').filter((p) => p.trim() !== '').map((p) => {
    const [name, w] = p.split('=');
    const weight = w === undefined ? 1 : Number(w);
    if (!(weight > 0)) throw new Error(`region ${name}: weight ${w} is not positive`);
    return { name: name.trim(), weight };
  });
  const sum = list.reduce((a, r) => a + r.weight, 0);
  return list.map((r) => ({ name: r.name, share: r.weight / sum }));
}

function int(v, d) {
  return v === undefined || v === '' ? d : parseInt(v, 10);
}

function float(v, d) {
  return v === undefined || v === '' ? d : parseFloat(v);
}
