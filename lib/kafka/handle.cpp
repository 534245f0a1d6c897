#include "kafka/handle.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <vector>

#include "log/log.hpp"

namespace clerk_sync::kafka {
namespace {
std::atomic<bool> g_destroy_left_running{false};
}  // namespace

bool destroy_left_running() { return g_destroy_left_running.load(); }

std::optional<std::string_view> find_header(const std::vector<header>& headers, std::string_view key) {
  for (const auto& h : headers)
    if (h.key == key) return std::string_view(h.value);
  return std::nullopt;
}

}  // namespace clerk_sync::kafka

namespace clerk_sync::kafka::detail {
namespace {

// One limiter for every client of the process: a broker that is down makes
// each client repeat the same lines every second or so.
log::rate_limiter& limiter() {
  static log::rate_limiter instance;
  return instance;
}

// Lines that differ only in numbers (counts, durations) are one kind; but
// librdkafka's leading "host:port/id: " names a broker, and one broker's
// trouble must not hide another's.
std::string kind_of(std::string_view tag, std::string_view text) {
  std::string key(tag);
  key += '|';
  const auto broker_end = text.find(": ");
  if (broker_end != std::string_view::npos && text.substr(0, broker_end).find(' ') == std::string_view::npos) {
    key += text.substr(0, broker_end + 2);
    text.remove_prefix(broker_end + 2);
  }
  for (const char c : text)
    if (!std::isdigit(static_cast<unsigned char>(c))) key += c;
  return key;
}

// syslog severities, as librdkafka uses them.
log::level level_of(int syslog_level) {
  if (syslog_level <= 3) return log::level::error;
  if (syslog_level == 4) return log::level::warn;
  if (syslog_level <= 6) return log::level::info;
  return log::level::debug;
}

// Refusals noted per client (refusal_of).
struct refusal_notes {
  std::mutex m;
  std::unordered_map<const rd_kafka_t*, refusal> by_client;
};
refusal_notes& notes() {
  static refusal_notes instance;
  return instance;
}

void note_refusal(const rd_kafka_t* rk, refusal::kind what, std::string_view reason) {
  if (!rk) return;
  if (reason.starts_with("[thrd:"))  // the thread's name: the broker follows anyway
    if (const auto end = reason.find("]: "); end != std::string_view::npos) reason.remove_prefix(end + 3);
  auto& n = notes();
  const std::lock_guard lock(n.m);
  n.by_client[rk] = refusal{what, std::string(reason)};
}

void forget_refusal(const rd_kafka_t* rk) {
  auto& n = notes();
  const std::lock_guard lock(n.m);
  n.by_client.erase(rk);
}

// A SASL handshake cut short on our side ("SaslAuthenticateRequest failed:
// Local: Broker transport failure", "Local: Broker handle destroyed"): a
// connection lost or closed mid-login, as when a client stops while a
// coordinator connection authenticates, which librdkafka 2.0.2 words as an
// authentication error. Transport trouble, not credentials the brokers refused.
bool login_cut_short(std::string_view text) { return text.find("Local: ") != std::string_view::npos; }

void on_log(const rd_kafka_t* rk, int level, const char* fac, const char* buf) {
  const std::string_view facility = fac ? fac : "";
  std::string_view text = buf ? buf : "";
  // A refusal reaches the error callback only when the application polls,
  // which a caller blocked in a metadata request does not; the log line
  // comes at once, from the broker's thread, but without the error code:
  // refusal_in reads its words.
  const bool failed = facility == "FAIL" && level <= 3;
  const auto what = failed ? refusal_in(text) : std::nullopt;
  if (what) note_refusal(rk, *what, text);
  const bool cut_short = failed && !what && text.find("SASL") != std::string_view::npos && login_cut_short(text);
  const char* client = rk ? rd_kafka_name(rk) : "";
  limiter().write(kind_of(facility, text), cut_short ? log::level::warn : level_of(level), "kafka_log",
                  {{"client", client}, {"facility", facility}, {"text", text}});
}

void on_error(rd_kafka_t* rk, int err, const char* reason, void* /*opaque*/) { log_error(rk, err, reason); }

// A broker holding back our requests under a quota (produce or fetch):
// librdkafka 2.0.2 keeps the time only in its statistics and says nothing
// at any log level, so webhooks got 503 "Message timed out", or a
// consumer's lag grew, with no word of the cause. A warning per client and
// broker, rate-limited (the quota holds for a while: one a minute with
// `repeated`), and an info line when the broker stops (librdkafka calls
// back with 0 then).
void on_throttle(rd_kafka_t* rk, const char* broker_name, int32_t broker_id, int throttle_time_ms,
                 void* /*opaque*/) {
  const char* client = rk ? rd_kafka_name(rk) : "";
  const std::string key = std::string("throttle|") + client + "|" + std::to_string(broker_id);
  if (throttle_time_ms > 0)
    limiter().write(key, log::level::warn, "kafka_throttled",
                    {{"client", client},
                     {"broker", broker_name ? broker_name : ""},
                     {"throttle_ms", static_cast<std::int64_t>(throttle_time_ms)},
                     {"outcome", "the broker holds back this client's requests under a quota"}});
  else
    limiter().write(key + "|end", log::level::info, "kafka_unthrottled",
                    {{"client", client}, {"broker", broker_name ? broker_name : ""}});
}

}  // namespace

void log_error(const rd_kafka_t* rk, int err, const char* reason, const rd_kafka_message_t* about) {
  const auto code = static_cast<rd_kafka_resp_err_t>(err);
  const std::string_view text = reason ? reason : rd_kafka_err2str(code);
  // Transport trouble is retried by librdkafka; what an operator must act
  // on (authentication, authorization, bad protocol) shows as an error.
  // Every broker down stays a warning: librdkafka 2.0.2 also reports it
  // after the brokers' ordinary idle disconnects (upstream #5142, fixed in
  // 2.11.1). A consumer that never gets its partitions says so at error
  // itself (not_joined, lib/consume/loop.cpp).
  // A failed TLS handshake may come as __TRANSPORT (see refusal_in): an
  // error all the same. A login cut short on our side is transport trouble.
  const bool cut_short = code == RD_KAFKA_RESP_ERR__AUTHENTICATION && login_cut_short(text);
  const bool tls = refusal_in(text) == refusal::kind::tls;
  const bool transient = !tls && (code == RD_KAFKA_RESP_ERR__TRANSPORT || code == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN ||
                                  code == RD_KAFKA_RESP_ERR__TIMED_OUT || cut_short);
  if (code == RD_KAFKA_RESP_ERR__AUTHENTICATION && !cut_short)
    note_refusal(rk, refusal::kind::authentication, text);
  else if (tls)
    note_refusal(rk, refusal::kind::tls, text);
  const char* client = rk ? rd_kafka_name(rk) : "";
  auto key = kind_of(rd_kafka_err2name(code), text);
  const auto level = transient ? log::level::warn : log::level::error;
  const std::string_view topic = about && about->rkt ? rd_kafka_topic_name(about->rkt) : "";
  // A partition's error has the offset it happened at; one of a whole topic
  // (not available, not authorized) has none, and its partition says
  // nothing. Each partition's trouble is a kind of its own: one stuck
  // partition must not hide another's.
  std::vector<log::field> fields{{"client", client}};
  if (!topic.empty()) {
    key += "|" + std::string(topic);
    fields.emplace_back("topic", topic);
  }
  if (!topic.empty() && about->offset >= 0) {
    key += "|" + std::to_string(about->partition);
    fields.emplace_back("partition", about->partition);
    fields.emplace_back("offset", about->offset);
  }
  fields.emplace_back("error", rd_kafka_err2name(code));
  fields.emplace_back("reason", text);
  limiter().write(key, level, "kafka_error", fields);
}

void set(rd_kafka_conf_t* conf, std::string_view key, std::string_view value) {
  std::array<char, 512> err{};
  const std::string k(key), v(value);
  if (rd_kafka_conf_set(conf, k.c_str(), v.c_str(), err.data(), err.size()) != RD_KAFKA_CONF_OK)
    throw config_error("kafka property '" + k + "': " + err.data());
}

std::string get(rd_kafka_conf_t* conf, const std::string& key) {
  std::array<char, 512> buf{};
  std::size_t size = buf.size();
  if (rd_kafka_conf_get(conf, key.c_str(), buf.data(), &size) != RD_KAFKA_CONF_OK)
    throw config_error("kafka property '" + key + "' cannot be read back");
  return buf.data();
}

namespace {

// Sets `fixed`, then the operator's properties in their order, refusing one
// that moves a fixed value (under its own name or an alias); the same value
// however spelled (acks=-1 for all) passes. One configuration throughout, so
// that a plugin an earlier property loads defines the later ones.
void set_checked(rd_kafka_conf_t* conf, const client_config& cfg, std::initializer_list<fixed_list> fixed) {
  struct wanted {
    std::string key;
    std::string_view value;
    std::string as_read;  // as librdkafka spells it back (acks: -1)
  };
  std::vector<wanted> want;
  for (const auto list : fixed)
    for (const auto& [k, v] : list) {
      set(conf, k, v);
      want.push_back({std::string(k), v, get(conf, std::string(k))});
    }
  for (const auto& [k, v] : cfg.properties) {
    set(conf, k, v);
    for (const auto& w : want)
      if (get(conf, w.key) != w.as_read)
        throw config_error("kafka property '" + k + "': clerk-sync sets " + w.key + "=" + std::string(w.value) +
                           " itself (its guarantees depend on it)");
  }
  // OAUTHBEARER without a token source of librdkafka's own: librdkafka asks
  // the application for each token, which clerk-sync never answers, so the
  // client would never connect and say nothing of why.
  const auto protocol = get(conf, "security.protocol");
  if ((protocol == "sasl_plaintext" || protocol == "sasl_ssl") && get(conf, "sasl.mechanisms") == "OAUTHBEARER" &&
      get(conf, "sasl.oauthbearer.method") != "oidc" && get(conf, "enable.sasl.oauthbearer.unsecure.jwt") != "true")
    throw config_error(
        "kafka property 'sasl.mechanisms': OAUTHBEARER needs a token source of librdkafka's own, "
        "sasl.oauthbearer.method=oidc (a librdkafka built with OIDC; Debian 12's is not): clerk-sync has none to "
        "give it, and the client would never connect");
}

}  // namespace

void refuse_overrides(const client_config& cfg, fixed_list fixed) {
  const conf_ptr scratch(rd_kafka_conf_new());
  set_checked(scratch.get(), cfg, {fixed, every_client_fixed()});
}

fixed_list every_client_fixed() {
  static constexpr std::array<std::pair<std::string_view, std::string_view>, 1> every_client{
      {{"allow.auto.create.topics", "false"}}};
  return every_client;
}

conf_ptr make_conf(const client_config& cfg, property_list defaults, fixed_list fixed) {
  conf_ptr conf(rd_kafka_conf_new());
  set(conf.get(), "bootstrap.servers", cfg.brokers);
  // Warnings and worse by default; an operator may raise it (`debug` too).
  set(conf.get(), "log_level", "4");
  for (const auto& [k, v] : defaults) set(conf.get(), k, v);
  set_checked(conf.get(), cfg, {fixed, every_client_fixed()});
  // librdkafka writes its debug contexts at syslog level 7, which is our
  // debug: asked for without it, they were dropped without a word. Said
  // once a process: its clients are many, and some made anew for a while.
  static std::atomic<bool> debug_hidden_said{false};
  if (!log::enabled(log::level::debug) &&
      std::any_of(cfg.properties.begin(), cfg.properties.end(), [](const auto& p) { return p.first == "debug"; }) &&
      !debug_hidden_said.exchange(true))
    log::warn("kafka_debug_hidden", {{"outcome", "librdkafka's debug lines are written at level debug: add "
                                                 "--log-level debug (CLERK_SYNC_LOG_LEVEL=debug) to see them"}});
  rd_kafka_conf_set_log_cb(conf.get(), &on_log);
  rd_kafka_conf_set_error_cb(conf.get(), &on_error);
  rd_kafka_conf_set_throttle_cb(conf.get(), &on_throttle);
  return conf;
}

conf_ptr make_conf(const client_config& cfg, property_list defaults, property_list fixed) {
  return make_conf(cfg, defaults, fixed_list(fixed.begin(), fixed.size()));
}

// librdkafka 2.0.2's rd_kafka_destroy can wait for ever: once a consumer
// group's partition was lost with its topic deleted, a broker thread keeps
// a reference that is never dropped (librdkafka #4187, fixed in 2.1.0). A
// consumer then never ended after SIGTERM, until systemd killed it at
// TimeoutStopSec, or its watchdog aborted it, without a word. Everything a
// client had to do is done before its destroy (a consumer's offsets are in
// the database with their rows, a producer was flushed), so the destroy
// runs on a thread of its own, and one that has not ended in 10 s is left
// running there, with an error line: the caller goes on to its last lines,
// and the process ends without waiting for it (destroy_left_running()).
void handle_deleter::operator()(rd_kafka_t* rk) const {
  constexpr auto bound = std::chrono::seconds(10);
  struct state {
    std::mutex m;
    std::condition_variable cv;
    bool done = false;
  };
  const auto st = std::make_shared<state>();
  const std::string name = rd_kafka_name(rk);
  std::thread destroying;
  try {
    destroying = std::thread([rk, st] {
      rd_kafka_destroy(rk);
      // After: the destroy itself may log a login cut short.
      forget_refusal(rk);
      const std::lock_guard lock(st->m);
      st->done = true;
      st->cv.notify_all();
    });
  } catch (const std::system_error& e) {
    // No thread to be had (a task limit, memory): destroyed here, unbounded,
    // rather than std::terminate from a destructor. Said first, since this
    // destroy may be the one that never ends.
    try {
      log::warn("kafka_destroy_inline", {{"client", name}, {"error", e.what()}});
    } catch (...) {  // NOLINT(bugprone-empty-catch): out of memory; a deleter must not throw
    }
    rd_kafka_destroy(rk);
    forget_refusal(rk);
    return;
  }
  std::unique_lock lock(st->m);
  if (st->cv.wait_for(lock, bound, [&] { return st->done; })) {
    lock.unlock();
    destroying.join();
    return;
  }
  lock.unlock();
  destroying.detach();
  g_destroy_left_running = true;
  log::error("kafka_destroy_stuck",
             {{"client", name},
              {"waited_s", static_cast<std::int64_t>(bound.count())},
              {"outcome", "left running; the process ends without it (librdkafka 2.0.2 #4187: a partition lost with "
                          "its topic deleted)"}});
}

std::optional<refusal::kind> refusal_in(std::string_view text) {
  const auto has = [text](std::string_view what) { return text.find(what) != std::string_view::npos; };
  // librdkafka's own check of the certificate after a handshake (__SSL).
  if (has("Failed to verify broker certificate") || has("Broker did not provide a certificate"))
    return refusal::kind::tls;
  // A failed handshake reads "SSL handshake failed: <OpenSSL's error>"
  // (__SSL), or, when it failed on a write, OpenSSL's error alone with
  // "(after 18ms in state SSL_HANDSHAKE)" (__TRANSPORT). Only an error of
  // OpenSSL's TLS code is the handshake's own ("error:0A000086:SSL
  // routines::certificate verify failed"); a connection closed or reset
  // meanwhile, as when a broker stops, reads "Disconnected", "SSL transport
  // error: ...", "system library" or "unexpected eof while reading"
  // (OpenSSL 3's word for a close without close_notify; it is also all that
  // TLS to a PLAINTEXT listener gets, which therefore is not named).
  if (has("SSL handshake failed: ") || has("in state SSL_HANDSHAKE")) {
    if (has("SSL routines") && !has("unexpected eof")) return refusal::kind::tls;
    return std::nullopt;
  }
  // A TLS alert the broker sent, whatever the state: under TLS 1.3 a broker
  // that requires a client certificate (ssl.client.auth=required) finds
  // none only after the client's side of the handshake is done, so its
  // alert arrives with the first request ("Receive failed: error:0A000412:
  // SSL routines::sslv3 alert bad certificate: SSL alert number 42 (after
  // 2ms in state APIVERSION_QUERY)"). An alert ends the connection (RFC
  // 8446 6.2); a disconnect sends none.
  // On a connection already up, an alert (a broker or a proxy in front of
  // it restarting) says nothing of this client's credentials.
  if (has("SSL routines") && has(" alert ") && !has("in state UP")) return refusal::kind::tls;
  // librdkafka 2.0.2 words every broker failure of a login (__AUTHENTICATION)
  // "SASL ..." (a broker's name is lower case, sasl_ssl://), but also its
  // guess at a disconnect soon after connecting without SASL (__TRANSPORT).
  // A login cut short on our side ("Local: ...") is not the brokers' refusal.
  if (has("SASL") && !has("might require SASL") && !login_cut_short(text)) return refusal::kind::authentication;
  return std::nullopt;
}

std::optional<refusal> refusal_of(const rd_kafka_t* rk) {
  auto& n = notes();
  const std::lock_guard lock(n.m);
  const auto it = n.by_client.find(rk);
  if (it == n.by_client.end()) return std::nullopt;
  return it->second;
}

void connection_accepted(const rd_kafka_t* rk) { forget_refusal(rk); }

rd_kafka_resp_err_t metadata(rd_kafka_t* rk, bool all_topics, rd_kafka_topic_t* only, const rd_kafka_metadata_t** md,
                             std::chrono::milliseconds timeout) {
  using std::chrono::milliseconds;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  // While no broker is usable (__TRANSPORT: nothing was sent), asked again
  // every half second, so that a refusal (noted from librdkafka's own
  // threads, in a few hundred ms on loopback, later on a loaded host) ends
  // the wait. Once a request reached a broker (__TIMED_OUT: no answer yet),
  // the answer gets all the time left in one wait, as a slow cluster needs.
  for (;;) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
    const auto slice = std::clamp(left, milliseconds(1), milliseconds(500));
    auto err = rd_kafka_metadata(rk, all_topics ? 1 : 0, only, md, static_cast<int>(slice.count()));
    if (err == RD_KAFKA_RESP_ERR__TIMED_OUT && left > slice) {
      const auto rest = std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
      if (rest.count() > 0) err = rd_kafka_metadata(rk, all_topics ? 1 : 0, only, md, static_cast<int>(rest.count()));
    }
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      forget_refusal(rk);
      return err;
    }
    if (err != RD_KAFKA_RESP_ERR__TRANSPORT) return err;
    if (const auto refused = refusal_of(rk))
      return refused->what == refusal::kind::tls ? RD_KAFKA_RESP_ERR__SSL : RD_KAFKA_RESP_ERR__AUTHENTICATION;
    if (left <= slice) return err;
  }
}

std::string failure_text(const rd_kafka_t* rk, rd_kafka_resp_err_t err) {
  // Only what a refusal looks like from here: no broker takes a request,
  // so requests time out or find no broker up.
  const bool silent = err == RD_KAFKA_RESP_ERR__AUTHENTICATION || err == RD_KAFKA_RESP_ERR__SSL ||
                      err == RD_KAFKA_RESP_ERR__TRANSPORT || err == RD_KAFKA_RESP_ERR__TIMED_OUT ||
                      err == RD_KAFKA_RESP_ERR__MSG_TIMED_OUT ||
                      err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN;
  if (silent)
    if (const auto refused = refusal_of(rk)) {
      if (refused->what == refusal::kind::tls)
        return "TLS handshake failed (check ssl.ca.location, ssl.endpoint.identification.algorithm, "
               "security.protocol; if the brokers require a client certificate, ssl.certificate.pem and "
               "ssl.key.pem in the properties file, or .location files this service's user can read): " +
               refused->reason;
      return "authentication failed (check sasl.username, sasl.password, sasl.mechanism): " + refused->reason;
    }
  return rd_kafka_err2str(err);
}

handle_ptr make_handle(rd_kafka_type_t type, conf_ptr conf) {
  std::array<char, 512> err{};
  rd_kafka_t* rk = rd_kafka_new(type, conf.get(), err.data(), err.size());
  if (!rk) {
    // No handle also when a thread could not start (systemd's TasksMax=, no
    // memory): a failure to restart on (exit 1, 3 or 4 by the program), not a
    // bad setting (exit 2, which no unit restarts).
    if (rd_kafka_last_error() == RD_KAFKA_RESP_ERR__CRIT_SYS_RESOURCE)
      throw fatal_error(std::string("kafka client: ") + err.data());
    throw config_error(std::string("kafka client: ") + err.data());
  }
  (void)conf.release();  // owned by rk from here on
  return handle_ptr(rk);
}

}  // namespace clerk_sync::kafka::detail
