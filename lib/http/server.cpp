#include "http/server.hpp"

#include "http/connection_end.hpp"
#include "http/keep_alive.hpp"
#include "http/listen.hpp"
#include "http/publish_health.hpp"
#include "http/request_bounds.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/intrusive/list.hpp>

#include <algorithm>
#include <array>
#include <cstring>
#include <string_view>
#include <utility>

#include "log/log.hpp"

namespace clerk_sync::http {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace bi = boost::intrusive;
using tcp = net::ip::tcp;
// Everything here runs on one io_context, so its sockets, timers and
// coroutines name that context's executor type rather than the type-erased
// any_io_executor, whose copies and conversions at every step of every
// operation went through function pointers (about 3 % of the receiver's
// CPU in a profile of scripts/bench receiver's case (b)).
using executor = net::io_context::executor_type;
template <class T = void>
using task = net::awaitable<T, executor>;
using socket_type = net::basic_stream_socket<tcp, executor>;
using stream_type = beast::basic_stream<tcp, executor>;
using timer_type =
    net::basic_waitable_timer<std::chrono::steady_clock, net::wait_traits<std::chrono::steady_clock>, executor>;
constexpr auto nothrow = net::as_tuple(net::use_awaitable_t<executor>{});
using bounds::max_read;
using bounds::read_chunk;

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Whether a field of the signature (svix-id, svix-timestamp,
// svix-signature, or its webhook-* name) comes twice. Each has one value:
// with two, we would check and publish the first while a proxy or a log in
// front may read the other, or join them as Node does.
bool repeats_signature_field(const bhttp::fields& fields) {
  static constexpr std::array<std::string_view, 6> names = {"svix-id",    "svix-timestamp",    "svix-signature",
                                                            "webhook-id", "webhook-timestamp", "webhook-signature"};
  std::array<bool, names.size()> seen{};
  for (const auto& f : fields) {
    if (f.name() != bhttp::field::unknown) continue;  // Beast knows none of them
    const auto name = f.name_string();
    for (std::size_t i = 0; i < names.size(); ++i)
      if (beast::iequals(name, names[i]) && std::exchange(seen[i], true)) return true;
  }
  return false;
}

}  // namespace

struct server::impl : std::enable_shared_from_this<impl> {
  // What a connection does once a request is over.
  enum class after {
    next_request,  // keep-alive: wait for the next one
    blank_lines,   // only blank lines came: still waiting for a request
    close,         // the client is gone, or asked to close, or was cut
    linger,        // answered early: read and discard its rest, then close
  };
  // One open connection.
  struct connection {
    stream_type* stream = nullptr;
    // Linked into `idle` while it waits for a request's first byte (since
    // `idle_since`, holding no buffer): the sweeper closes it after the idle
    // timeout, the cap for a new connection, stop() at once (nothing in
    // flight). Otherwise a request is being read or answered. Unlinks itself
    // when the connection goes.
    bi::list_member_hook<bi::link_mode<bi::auto_unlink>> idle_hook;
    std::chrono::steady_clock::time_point idle_since{};
    // Linked into `transfers` while a request is read (from its first
    // byte to its body's end), while the connection lingers after an early
    // answer, and while an answer is written, since `transfer_since`: the
    // cap may close it once that is long. Not while a request is decided:
    // its event may be on its way to Kafka.
    bi::list_member_hook<bi::link_mode<bi::auto_unlink>> transfer_hook;
    std::chrono::steady_clock::time_point transfer_since{};
    bool writing = false;  // the transfer is an answer's write
  };
  // The waiting connections, longest idle first (each joins at the back
  // when it starts to wait): the sweeper and the cap take from the front.
  using idle_list = bi::list<connection, bi::member_hook<connection, decltype(connection::idle_hook), &connection::idle_hook>,
                             bi::constant_time_size<false>>;
  // The connections reading a request or writing an answer, longest first
  // (the same way).
  using transfer_list =
      bi::list<connection, bi::member_hook<connection, decltype(connection::transfer_hook), &connection::transfer_hook>,
               bi::constant_time_size<false>>;

  net::io_context& ioc;
  net::basic_socket_acceptor<tcp, executor> acceptor;
  handler_config handler;
  server_limits limits;
  std::size_t small_body_limit;  // small_body() of the limits, once
  std::string topic;
  publish_fn publish;
  std::atomic<readiness>* ready = nullptr;  // the probe's
  publish_health health{topic};
  [[nodiscard]] readiness probe_state() const { return ready ? ready->load() : readiness::kafka_unreachable; }
  // What /readyz says: the probe's state, unless publishes fail meanwhile.
  [[nodiscard]] readiness kafka_state() const {
    const auto r = probe_state();
    if (r == readiness::ready && health.may_be_failing() && health.failing(std::chrono::steady_clock::now()))
      return readiness::publish_failing;
    return r;
  }
  // Failures count only while the probe says ready: otherwise /readyz
  // already says why, and the failures of an outage would hold it at
  // publish_failing after the cluster is back. A record Kafka refuses for
  // its size is that event's fault (413), not the receiver's; a full local
  // queue is a burst past what the producer holds, with Kafka answering.
  void note_publish(std::string_view outcome, std::string_view why) {
    if (outcome == "acknowledged")
      health.acknowledged();
    else if (outcome != "too_large_for_kafka" && outcome != "queue_full" && probe_state() == readiness::ready)
      health.failed(outcome, why, std::chrono::steady_clock::now());
  }
  std::list<connection> open;
  idle_list idle;
  transfer_list transfers;
  bool stopping = false;
  std::size_t body_bytes = 0;  // reserved by requests whose bodies are being read or held
  std::array<char, 16 * 1024> discard{};  // lingering reads land here (one thread: no race)
  // A client flood at the connection cap, or a descriptor shortage, repeats
  // a line without bound: the first at once, then one a minute.
  log::rate_limiter limiter;

  // A share of the body memory budget, returned when the request is over.
  class reservation {
   public:
    reservation() = default;
    reservation(impl* owner, std::size_t n) : owner_(owner), n_(n) { owner_->body_bytes += n_; }
    reservation(reservation&& o) noexcept : owner_(std::exchange(o.owner_, nullptr)), n_(o.n_) {}
    reservation& operator=(reservation&& o) noexcept {
      std::swap(owner_, o.owner_);
      std::swap(n_, o.n_);
      return *this;
    }
    ~reservation() {
      if (owner_) owner_->body_bytes -= n_;
    }
    explicit operator bool() const { return owner_ != nullptr; }

   private:
    impl* owner_ = nullptr;
    std::size_t n_ = 0;
  };

  // Reserves what the body can take: its Content-Length, or the limit when
  // chunked. An empty reservation means the budget is spent. Larger and
  // chunked bodies share half of the budget; a body of a webhook's size
  // (small_body() at most, declared) may use all of it. The other half holds
  // such a body for every connection the cap allows, so that no number of
  // clients declaring bodies and sending them slowly can starve Svix's
  // deliveries of memory.
  reservation reserve(std::optional<std::uint64_t> content_length) {
    const std::size_t n = content_length ? static_cast<std::size_t>(*content_length) : limits.body_limit;
    const std::size_t budget = limits.body_memory_budget;
    const bool small = content_length && n <= small_body_limit;
    const std::size_t usable = small ? budget : budget / 2;  // validate(): at least the body limit
    if (n > usable - std::min(body_bytes, usable)) return {};
    return {this, n};
  }

  impl(net::io_context& io, handler_config h, const server_limits& l, std::string t, publish_fn p)
      : ioc(io),
        acceptor(io),
        handler(std::move(h)),
        limits(l),
        small_body_limit(small_body(l.body_memory_budget, l.max_connections)),
        topic(std::move(t)),
        publish(std::move(p)) {}

  task<void> accept_loop() {
    auto self = shared_from_this();
    timer_type backoff(ioc);
    while (!stopping) {
      auto [ec, sock] = co_await acceptor.async_accept(nothrow);
      if (stopping) co_return;
      if (ec) {
        // Out of file descriptors and the like: back off instead of spinning.
        const auto error = ec.message();
        limiter.write("accept_failed", log::level::error, "accept_failed", {{"error", error}});
        backoff.expires_after(std::chrono::milliseconds(100));
        (void)co_await backoff.async_wait(nothrow);
        continue;
      }
      if (open.size() >= limits.max_connections && !close_longest_idle() && !close_slowest_request()) {
        limiter.write("refused", log::level::warn, "refused",
                      {{"outcome", "max_connections"}, {"connections", open.size()}});
        beast::error_code ignored;
        sock.close(ignored);
        continue;
      }
      net::co_spawn(ioc, session(std::move(sock)), net::detached);
    }
  }

  // At the cap, the connection that has waited longest for a request makes
  // room for a new one (as nginx reuses idle keep-alive connections when it
  // runs out): clients that open connections and stay silent cannot hold
  // the cap against Svix. Its serve() ends, and `open` shrinks then: one
  // past the cap meanwhile. A connection whose next request has arrived (its
  // wait done, its coroutine not yet resumed) is passed over: it is about to
  // be served. False when none is left; the new connection is refused then.
  bool close_longest_idle() {
    for (auto& c : idle) {
      if (request_arrived(c)) continue;
      close_idle(c);  // unlinks c: the loop ends here
      limiter.write("idle_closed", log::level::warn, "idle_closed",
                    {{"outcome", "max_connections"}, {"connections", open.size()}});
      return true;
    }
    return false;
  }

  // Then, when none waits, the request read longest (or the answer written
  // longest), once that took a second (half the read timeout, when
  // shorter): the timeouts bound each request, not a connection, so a
  // client that sends its header and body a few bytes at a time, and
  // another request after each answer, held its place for ever with a few
  // hundred bytes every twenty seconds, and a few such clients held the cap
  // against Svix, whose requests arrive whole within milliseconds; so did
  // clients that send requests and read no answer, once their window shut.
  // A transfer younger than that is not cut for a newcomer (a burst at the
  // cap refuses the newcomer, as before). Closed, not cancelled, so that its
  // next read or write fails; a read whose completion was already queued
  // still succeeds, and serve_request() checks the socket before it acts on
  // what was read. Its serve() ends without a word (the line is here).
  bool close_slowest_request() {
    if (transfers.empty()) return false;
    auto& c = transfers.front();
    const auto now = std::chrono::steady_clock::now();
    const auto slow_after =
        std::min<std::chrono::steady_clock::duration>(std::chrono::seconds(1), limits.read_timeout / 2);
    if (now - c.transfer_since < slow_after) return false;
    c.transfer_hook.unlink();
    beast::error_code ignored;
    c.stream->socket().close(ignored);
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now - c.transfer_since).count();
    limiter.write("slow_closed", log::level::warn, "slow_closed",
                  {{"outcome", "max_connections"},
                   {"connections", open.size()},
                   {"stage", c.writing ? "answer" : "request"},
                   {c.writing ? "writing_ms" : "reading_ms", ms}});
    return true;
  }

  // A request's reading, or an answer's writing, starts: on the list the
  // cap takes from, from now.
  void begin_transfer(connection& c, bool writing) {
    c.transfer_since = std::chrono::steady_clock::now();
    c.writing = writing;
    transfers.push_back(c);
  }

  static bool request_arrived(connection& c) { return http::request_arrived(c.stream->socket()); }

  // Ends a waiting connection's wait (its serve() returns): out of `idle`
  // at once, so that nothing takes it twice.
  void close_idle(connection& c) {
    c.idle_hook.unlink();
    beast::error_code ignored;
    c.stream->socket().cancel(ignored);
  }

  // Closes connections that waited longer than the idle timeout for a
  // request: one timer for all of them instead of one per request.
  task<void> sweep_idle() {
    auto self = shared_from_this();
    timer_type tick(ioc);
    const auto every = std::clamp<std::chrono::milliseconds>(limits.idle_timeout / 4, std::chrono::milliseconds(10),
                                                             std::chrono::milliseconds(1000));
    while (!stopping) {
      tick.expires_after(every);
      (void)co_await tick.async_wait(nothrow);
      const auto now = std::chrono::steady_clock::now();
      while (!idle.empty() && now - idle.front().idle_since >= limits.idle_timeout) close_idle(idle.front());
    }
  }

  task<bhttp::response<bhttp::string_body>> answer_publish(const decision& d, std::string_view body, int& status,
                                                           std::int32_t& partition, std::int64_t& offset,
                                                           std::string& outcome, std::string& why) {
    struct pending {
      explicit pending(executor ex) : timer(ex) {}
      std::optional<kafka::delivery_report> report;
      timer_type timer;
      std::string svix_id;
      bool answered = false;  // the 503 for the deadline went out already
    };
    auto p = std::make_shared<pending>(ioc.get_executor());
    p->svix_id = d.svix_id;
    p->timer.expires_after(limits.publish_deadline);
    const auto& pub = *d.publish;
    const kafka::outgoing_record rec{topic, pub.key, body, record_headers(pub, now_ms())};
    // A report on our thread (served by the event loop, or the bench-only
    // immediate acknowledgement inside publish()) is taken at once, and so
    // is one served by the flush after the loop has stopped (nothing else
    // runs then); one from a producer's poller thread hops to the
    // connection's executor first.
    auto take = [p](const kafka::delivery_report& r) {
      if (p->answered) {
        // Svix got a 503 and will retry; if Kafka has it now, the retry
        // makes a duplicate, which the consumers' ledger absorbs.
        if (r.ok)
          log::warn("late_report", {{"svix_id", p->svix_id}, {"outcome", "acknowledged"}, {"partition", r.partition},
                                    {"offset", r.offset}});
        else  // librdkafka's reason, or the brokers' refusal (failure_text)
          log::warn("late_report", {{"svix_id", p->svix_id}, {"outcome", "not_acknowledged"}, {"error", r.error}});
        return;
      }
      p->report = r;
      p->timer.cancel();
    };
    auto on_report = [take, &io = ioc, ex = ioc.get_executor()](const kafka::delivery_report& r) {
      if (ex.running_in_this_thread() || io.stopped())
        take(r);
      else
        net::post(ex, [take, r] { take(r); });
    };
    kafka::enqueue_status st;
    try {
      st = publish(rec, std::move(on_report), &why);
    } catch (const std::exception& e) {
      st = kafka::enqueue_status::rejected;
      why = e.what();
    }
    response r;
    if (st == kafka::enqueue_status::too_large) {
      outcome = "too_large_for_kafka";
      r = too_large_for_kafka();
    } else if (st != kafka::enqueue_status::queued) {
      outcome = st == kafka::enqueue_status::queue_full ? "queue_full"
                : st == kafka::enqueue_status::fatal    ? "producer_fatal"
                                                         : "produce_rejected";
      r = unavailable(outcome);
    } else {
      if (!p->report) (void)co_await p->timer.async_wait(nothrow);
      p->answered = true;
      if (!p->report) {
        outcome = "deadline";
        r = unavailable("kafka did not acknowledge in time");
      } else if (!p->report->ok) {
        why = p->report->error;
        if (p->report->too_large) {
          outcome = "too_large_for_kafka";
          r = too_large_for_kafka();
        } else {
          outcome = p->report->possibly_persisted ? "not_acknowledged_possibly_persisted" : "not_acknowledged";
          r = unavailable("kafka did not acknowledge");
        }
      } else {
        partition = p->report->partition;
        offset = p->report->offset;
        outcome = "acknowledged";
        r = published(partition, offset);
      }
    }
    status = r.status;
    co_return to_beast(r);
  }

  static bhttp::response<bhttp::string_body> to_beast(const response& r) {
    bhttp::response<bhttp::string_body> res{static_cast<bhttp::status>(r.status), 11};
    res.set(bhttp::field::content_type, "application/json");
    if (r.retry_after_s) res.set(bhttp::field::retry_after, std::to_string(*r.retry_after_s));
    if (!r.allow.empty()) res.set(bhttp::field::allow, r.allow);
    res.body() = r.body;
    return res;
  }

  task<void> session(socket_type sock) {
    auto self = shared_from_this();
    stream_type stream(std::move(sock));
    const auto me = open.emplace(open.end());
    me->stream = &stream;
    try {
      co_await serve(stream, *me);
    } catch (const std::exception& e) {
      log::error("connection_failed", {{"error", e.what()}});
    }
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream.socket().close(ignored);
    open.erase(me);
  }

  // A connection's requests. Between them it waits for the next one's first
  // byte holding no read buffer and no request, only its stream and small
  // coroutine frames (about 1.8 KiB in all, which 1,000 idle connections
  // multiply); the request, its answer and their state live in
  // serve_request()'s frame (over 2 KiB) while a request is served.
  task<void> serve(stream_type& stream, connection& me) {
    // Bounded (lib/http/request_bounds.hpp; serve_request() sets the bound
    // of each stage): past it a read fails with buffer_overflow (answered
    // 400), so a line that never ends costs at most a header and one read,
    // not what the client sends in the read timeout.
    beast::flat_buffer buffer;
    // Blank lines are skipped once between requests (RFC 9112 2.2 asks a
    // server to skip at least one: some clients send a CRLF after a body).
    // Each wait for a request starts the idle timeout afresh, so a second
    // time in a row would let a client hold its connection (and a place
    // under the cap) for ever with two bytes a minute: it is closed then.
    bool skipped_blank_lines = false;
    while (!stopping) {
      // Between requests the buffer keeps only bytes already received (a
      // pipelined request): it is freed, or cut down to them, so that a
      // large body's room never outlives its request. A keep-alive
      // connection thus allocates its 8 KiB anew for each request.
      if (buffer.size() == 0 || buffer.capacity() > read_chunk) buffer.shrink_to_fit();
      if (buffer.size() == 0) {
        // Wait without a buffer and without a timer of its own:
        // sweep_idle() enforces the idle timeout.
        me.idle_since = std::chrono::steady_clock::now();
        idle.push_back(me);
        auto [ec] = co_await stream.socket().async_wait(tcp::socket::wait_read, nothrow);
        me.idle_hook.unlink();  // if the sweeper, the cap or stop() has not
        if (ec) co_return;  // closed or idle too long: nothing to answer
      }
      begin_transfer(me, false);
      const auto then = co_await serve_request(stream, buffer, me);
      if (then != after::linger) me.transfer_hook.unlink();
      if (then == after::blank_lines) {
        if (!std::exchange(skipped_blank_lines, true)) continue;
        limiter.write("blank_lines", log::level::info, "idle_closed", {{"outcome", "blank_lines"}});
        co_return;
      }
      skipped_blank_lines = false;
      if (then == after::next_request) continue;
      if (then == after::linger) {
        // The request and its state are gone with serve_request()'s frame
        // (a rejected header's fields, a refused body's reservation); the
        // buffer goes too, so a lingering connection holds only its stream.
        buffer = beast::flat_buffer();
        co_await http::linger(stream, limits.read_timeout, std::max(min_linger_bytes, 4 * limits.body_limit),
                              net::buffer(discard));
        me.transfer_hook.unlink();
      }
      co_return;
    }
  }

  void log_request(const decision& d, std::string_view outcome, int status, std::int32_t partition,
                   std::int64_t offset, std::chrono::steady_clock::time_point started, std::string_view why) {
    const auto ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
    std::string_view msg = d.msg;
    if (d.publish && status != 200) msg = status == 413 ? "rejected" : "unavailable";
    if (msg == "published")
      log::info(msg, {{"svix_id", d.svix_id}, {"type", d.type}, {"user", d.user}, {"status", status},
                      {"outcome", outcome}, {"partition", partition}, {"offset", offset}, {"ms", ms}});
    else if (msg == "probe")
      log::debug(msg, {{"outcome", outcome}, {"status", status}, {"ms", ms}});
    else if (!why.empty())
      // A produce failure: librdkafka's reason, so that an operator can tell why.
      log::error(msg, {{"svix_id", d.svix_id}, {"type", d.type}, {"user", d.user}, {"status", status},
                       {"outcome", outcome}, {"error", why}, {"ms", ms}});
    else if (msg == "unavailable")
      log::warn(msg, {{"svix_id", d.svix_id}, {"type", d.type}, {"user", d.user}, {"status", status},
                      {"outcome", outcome}, {"ms", ms}});
    else if (!d.verified)
      // Not a verified delivery (a bad or missing signature, a wrong path or
      // method): a line anyone can repeat without bound, so it is
      // rate-limited per kind, as `refused` is. A flood of them then cannot
      // use up journald's own limit and drop the lines of real deliveries.
      // A 401 (no signature matched, or a timestamp out of tolerance) is at
      // warn: with a secret that no longer matches Clerk's, every delivery
      // gets one, and an operator watching warnings must see it.
      limiter.write(std::string(msg) + ":" + std::string(outcome), status == 401 ? log::level::warn : log::level::info,
                    msg,
                    {{"svix_id", d.svix_id}, {"type", d.type}, {"user", d.user}, {"status", status},
                     {"outcome", outcome}, {"ms", ms}});
    else
      log::info(msg, {{"svix_id", d.svix_id}, {"type", d.type}, {"user", d.user}, {"status", status},
                      {"outcome", outcome}, {"ms", ms}});
  }

  // Answers before the request was read to its end (a limit, a route, the
  // budget). The connection then lingers (serve() does it, once the
  // request's state is freed) and closes without resetting: the client may
  // still be sending, and a close with unread input would make its kernel
  // drop our answer. A HEAD request's answer keeps its Content-Length and
  // sends no body.
  task<after> answer_early(stream_type& stream, const response& r, std::string_view msg, std::string_view outcome,
                          bool head = false, std::string_view detail = {}) {
    // Decided before any signature was checked: rate-limited per kind, as above.
    const auto key = std::string(msg) + ":" + std::string(outcome);
    const auto lv = r.status == 503 ? log::level::warn : log::level::info;
    if (detail.empty())
      limiter.write(key, lv, msg, {{"status", r.status}, {"outcome", outcome}});
    else
      limiter.write(key, lv, msg, {{"status", r.status}, {"outcome", outcome}, {"error", detail}});
    co_return co_await write_early(stream, r, head);
  }

  // An early answer's write, its line already logged.
  task<after> write_early(stream_type& stream, const response& r, bool head) {
    auto res = to_beast(r);
    res.keep_alive(false);
    res.prepare_payload();
    if (head) res.body().clear();
    stream.expires_after(limits.read_timeout);
    auto [ec, n] = co_await bhttp::async_write(stream, res, nothrow);
    co_return ec ? after::close : after::linger;
  }

  // A failed read of a request's header or body: answered while the client
  // is there to be told (a limit, malformed HTTP or chunking, a chunk line
  // past the read buffer's bound), closed otherwise, with a line when a
  // request was cut off or timed out (lib/http/connection_end.hpp). The
  // connection ends.
  task<after> after_read_error(stream_type& stream, beast::error_code ec, std::string_view stage, bool started) {
    switch (const auto f = classify_read_error(ec, started)) {
      case read_failure::header_limit:
        co_return co_await answer_early(stream, headers_too_large(), "rejected", "header_limit");
      case read_failure::body_limit: co_return co_await answer_early(stream, too_large(), "rejected", "body_limit");
      case read_failure::line_limit:
        co_return co_await answer_early(stream, bad_request(), "rejected", "chunk_line_limit");
      case read_failure::malformed:
        // Beast's word for what was malformed (a bad Content-Length, a bare
        // LF, both Content-Length and Transfer-Encoding, ...), so that a
        // probe can be told from a broken client.
        co_return co_await answer_early(stream, bad_request(), "rejected", "bad_request", false,
                                        std::string(stage) + ": " + ec.message());
      case read_failure::gone:
      case read_failure::cut_off:
      case read_failure::timed_out: log_unfinished(limiter, f, stage);
    }
    co_return after::close;
  }

  static bool wants_continue(const bhttp::request<bhttp::string_body>& req) {
    const auto it = req.find(bhttp::field::expect);
    // HTTP/1.0 has no 100 (Continue): RFC 9110 10.1.1 has it ignored there.
    return req.version() >= 11 && it != req.end() && beast::iequals(it->value(), "100-continue");
  }

  // Reads one request, once its first byte is here, and answers it; what
  // the connection does next.
  task<after> serve_request(stream_type& stream, beast::flat_buffer& buffer, connection& me) {
    bounds::request_parser parser;
    bounds::limit(parser, limits.header_limit, limits.body_limit);
    bounds::header_stage(buffer, limits.header_limit);
    // Once a request's first byte is here, its whole header must follow
    // within the read timeout.
    stream.expires_after(limits.read_timeout);
    // The header is read into the buffer first, up to its blank line or the
    // header limit's worth, so that its raw bytes can be looked at; then it
    // is parsed from there, with no further trip through the event loop.
    // Blank lines before a request line are dropped (RFC 9112 2.2: some
    // clients send a CRLF after a body); when only those came, there is
    // nothing to answer.
    std::size_t searched = 0;  // the header's end is not before this offset
    bool line_checked = false;
    for (bool read_any = false;;) {
      const auto before = buffer.size();
      const bool some = bounds::drop_blank_lines(buffer);
      // Only blank lines, read now or left after the last request's body:
      // nothing to answer, the connection waits as an idle one.
      if (!some && (read_any || before != 0)) co_return after::blank_lines;
      if (some && bounds::header_read(bounds::text_of(buffer), limits.header_limit, searched, line_checked)) break;
      auto [rec, rn] = co_await stream.async_read_some(buffer.prepare(beast::read_size(buffer, max_read)), nothrow);
      buffer.commit(rn);
      read_any = true;
      // A request cut off, or no request at all when nothing came.
      if (rec) co_return co_await after_read_error(stream, rec, "header", buffer.size() != 0);
    }
    // (A header without its end within the limit is too large: Beast's own
    // limit, on the request line and the fields apart, let a little more
    // through.)
    const auto parsed = bounds::parse_header(parser, buffer, limits.header_limit);
    if (parsed.refusal == "obs_fold") co_return co_await answer_early(stream, bad_request(), "rejected", "obs_fold");
    auto& req = parser.get();
    const bool head = req.method() == bhttp::verb::head;
    if (parsed.refusal == "header_fields")
      co_return co_await answer_early(stream, headers_too_large(), "rejected", "header_fields", head);
    if (parsed.ec) co_return co_await after_read_error(stream, parsed.ec, "header", true);
    // A Transfer-Encoding whose last coding is not chunked leaves the body's
    // end unknown (RFC 9112 6.3): Beast would read no body and take the
    // bytes for the next request, where a proxy may see one. Any coding
    // before chunked (gzip, ...) would never be undone, so the signature
    // would be checked over encoded bytes; and an HTTP/1.0 message with
    // one must not keep its connection (RFC 9112 6.1). So: one field, bare
    // chunked, HTTP/1.1, or 400 and close.
    if (req.count(bhttp::field::transfer_encoding) != 0 &&
        (req.count(bhttp::field::transfer_encoding) != 1 || req.version() < 11 ||
         !beast::iequals(req[bhttp::field::transfer_encoding], "chunked")))
      co_return co_await answer_early(stream, bad_request(), "rejected", "transfer_encoding", head);
    // RFC 9112 3.2: an HTTP/1.1 request without Host, or any request with
    // two Host lines, is 400. Beast checks neither; a proxy in front that
    // routes by one of two Host lines would disagree with us on the other.
    if (const auto hosts = req.count(bhttp::field::host); hosts > 1 || (hosts == 0 && req.version() >= 11))
      co_return co_await answer_early(stream, bad_request(), "rejected", "host", head);
    if (repeats_signature_field(req))
      co_return co_await answer_early(stream, repeated_signature_header(), "rejected", "repeated_signature_header",
                                      head);
    const auto started = std::chrono::steady_clock::now();
    const auto method = std::string_view(req.method_string().data(), req.method_string().size());
    const auto target = std::string_view(req.target().data(), req.target().size());
    const auto header = [&req](std::string_view name) -> std::optional<std::string_view> {
      const auto it = req.find(beast::string_view(name.data(), name.size()));
      if (it == req.end()) return std::nullopt;
      return std::string_view(it->value().data(), it->value().size());
    };
    // What the header alone decides (the route, the signature headers'
    // presence and timestamp): before a body is read, so that one that
    // cannot verify takes no budget and gets no 100 Continue.
    auto checked = classify_header({method, target, {}, header}, handler, std::chrono::system_clock::now(),
                                   kafka_state());
    reservation held;
    if (!parser.is_done()) {
      if (const auto& d = checked.decided) {
        // A signature refused: the line classify() writes (a 401 at warn).
        // A route (a probe, 404, 405) with a body: rate-limited, as any
        // answer decided before a signature is.
        if (!checked.by_signature) co_return co_await answer_early(stream, d->answer, d->msg, d->outcome, head);
        log_request(*d, d->outcome, d->answer.status, -1, -1, started, {});
        co_return co_await write_early(stream, d->answer, head);
      }
      const auto length = parser.content_length();
      held = reserve(length ? std::optional<std::uint64_t>(*length) : std::nullopt);
      if (!held)
        co_return co_await answer_early(stream, over_memory_budget(), "unavailable", "memory_budget", head);
      if (wants_continue(req)) {
        static constexpr std::string_view go_on = "HTTP/1.1 100 Continue\r\n\r\n";
        auto [cec, cn] = co_await net::async_write(stream, net::buffer(go_on), nothrow);
        if (cec) co_return after::close;
      }
      bounds::body_stage(buffer, length ? std::optional<std::uint64_t>(*length) : std::nullopt);
      stream.expires_after(limits.read_timeout);
      // Eager: each read parses all it holds. Otherwise Beast parses one
      // chunk line or chunk per call, and a body of 1-byte chunks cost two
      // trips through the event loop a byte (0.5 s of CPU for 1 MiB).
      parser.eager(true);
      const auto header_fields = std::distance(req.begin(), req.end());
      // What the header's reads took past the header is fresh to the body.
      for (std::size_t fresh = buffer.size();;) {
        if (const auto pec = bounds::parse_body(parser, buffer, fresh); pec && pec != bhttp::error::need_more)
          co_return co_await after_read_error(stream, pec, "body", true);
        if (parser.is_done()) break;
        const auto room = beast::read_size(buffer, max_read);
        if (room == 0) co_return co_await after_read_error(stream, bhttp::error::buffer_overflow, "body", true);
        auto [rec, rn] = co_await stream.async_read_some(buffer.prepare(room), nothrow);
        buffer.commit(rn);
        fresh = rn;
        if (rec) co_return co_await after_read_error(stream, rec, "body", true);
      }
      // Beast adds a chunked body's trailer fields to the header's, where
      // they would be read as headers, svix-signature included (RFC 9110
      // 6.5 forbids that). Svix sends no trailer: refused.
      if (std::distance(req.begin(), req.end()) != header_fields)
        co_return co_await answer_early(stream, bad_request(), "rejected", "trailer", head);
    }
    // Closed at the cap just as its last read completed: never published
    // (its answer could not be written, and Svix would send it again).
    if (!stream.socket().is_open()) co_return after::close;
    me.transfer_hook.unlink();  // read whole: decided now, whatever the cap
    const auto d = checked.decided ? std::move(*checked.decided)
                                   : classify_body({method, target, req.body(), header}, checked.headers, handler);
    int status = d.answer.status;
    std::int32_t partition = -1;
    std::int64_t offset = -1;
    std::string outcome(d.outcome);
    std::string why;
    bhttp::response<bhttp::string_body> res;
    if (d.publish) {
      res = co_await answer_publish(d, req.body(), status, partition, offset, outcome, why);
      note_publish(outcome, why);
    } else
      res = to_beast(d.answer);
    log_request(d, outcome, status, partition, offset, started, why);
    res.keep_alive(keeps_alive(parser) && !stopping);
    res.prepare_payload();
    if (head) res.body().clear();
    // Written within the read timeout, and closed at the cap once that
    // takes a second (close_slowest_request).
    begin_transfer(me, true);
    stream.expires_after(limits.read_timeout);
    auto [wec, wn] = co_await bhttp::async_write(stream, res, nothrow);
    me.transfer_hook.unlink();
    if (wec && d.publish && status == 200) {
      // Kafka holds the event, Svix was not told: its retry is a duplicate,
      // which the consumers' ledger absorbs.
      const auto error = wec.message();
      log::warn("answer_failed", {{"svix_id", d.svix_id}, {"status", status}, {"error", error}});
    }
    co_return !wec && res.keep_alive() ? after::next_request : after::close;
  }
};

server::server(net::io_context& ioc, const listen_address& where, handler_config handler,
               const server_limits& limits, std::string topic, publish_fn publish)
    : impl_(std::make_shared<impl>(ioc, std::move(handler), limits, std::move(topic), std::move(publish))) {
  impl_->ready = &kafka_state;
  listen(impl_->acceptor, where);
}

server::~server() {
  // Coroutines still hold the impl; make sure none touches this object's atomic.
  impl_->ready = nullptr;
}

void server::start() {
  net::co_spawn(impl_->ioc, impl_->accept_loop(), rethrow_failure);
  net::co_spawn(impl_->ioc, impl_->sweep_idle(), rethrow_failure);
}

void server::stop() {
  if (impl_->stopping) return;
  impl_->stopping = true;
  beast::error_code ignored;
  impl_->acceptor.close(ignored);
  // Nothing in flight to lose, unless a request has just arrived: that one
  // is served, with Connection: close.
  for (auto& c : impl_->idle)
    if (!impl::request_arrived(c)) c.stream->socket().close(ignored);
}

std::size_t server::connections() const { return impl_->open.size(); }

std::uint16_t server::port() const {
  beast::error_code ec;
  return impl_->acceptor.local_endpoint(ec).port();
}

}  // namespace clerk_sync::http
