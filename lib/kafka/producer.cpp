#include "kafka/producer.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <mutex>
#include <system_error>
#include <thread>

#include "kafka/handle.hpp"

namespace clerk_sync::kafka {

struct producer::impl {
  detail::handle_ptr rk;
  fatal_callback on_fatal;
  std::atomic<bool> stopping{false};
  std::atomic<bool> fatal_seen{false};
  mutable std::mutex fatal_mutex;
  std::optional<std::string> fatal_text;
  std::thread poller;
  // serve_on_caller: librdkafka writes a byte to wake[1] when its queue of
  // reports turns non-empty; the caller waits on wake[0].
  std::array<int, 2> wake{-1, -1};

  static void on_delivery(rd_kafka_t* rk, const rd_kafka_message_t* m, void*) {
    // The opaque was released to librdkafka in produce(); take it back.
    std::unique_ptr<delivery_callback> cb(static_cast<delivery_callback*>(m->_private));
    if (!cb) return;
    delivery_report r;
    r.ok = m->err == RD_KAFKA_RESP_ERR_NO_ERROR;
    r.partition = m->partition;
    r.offset = m->offset;
    if (!r.ok) {
      // A record that timed out because the brokers refused the login or
      // the TLS handshake says so, not only "Message timed out".
      r.error = detail::failure_text(rk, m->err);
      r.possibly_persisted = rd_kafka_message_status(m) == RD_KAFKA_MSG_STATUS_POSSIBLY_PERSISTED;
      r.too_large = m->err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE;
    }
    (*cb)(r);
  }

  static void on_error(rd_kafka_t* handle, int err, const char* reason, void* opaque) {
    auto* self = static_cast<impl*>(opaque);
    detail::log_error(handle, err, reason);
    if (err != RD_KAFKA_RESP_ERR__FATAL) return;  // transient: librdkafka retries on its own
    std::array<char, 512> buf{};
    rd_kafka_fatal_error(handle, buf.data(), buf.size());
    {
      std::lock_guard lock(self->fatal_mutex);
      self->fatal_text = buf[0] ? std::string(buf.data()) : std::string(reason ? reason : "fatal error");
    }
    if (!self->fatal_seen.exchange(true) && self->on_fatal) self->on_fatal(*self->fatal_reason());
  }

  std::optional<std::string> fatal_reason() const {
    std::lock_guard lock(fatal_mutex);
    return fatal_text;
  }
};

namespace {

// What the producer sets whatever an operator's properties say: derived from
// the caller's deadline and size limits, which they must agree with (see
// http::validate), and exactly the guarantees the receiver promises Svix.
struct fixed_properties {
  std::string timeout, max_bytes;
  explicit fixed_properties(const producer_options& opts)
      : timeout(std::to_string(opts.message_timeout.count())), max_bytes(std::to_string(opts.max_message_bytes)) {}
  [[nodiscard]] std::array<std::pair<std::string_view, std::string_view>, 5> list() const {
    return {{{"message.timeout.ms", timeout},
             {"message.max.bytes", max_bytes},
             {"enable.idempotence", "true"},
             {"acks", "all"},
             {"delivery.report.only.error", "false"}}};
  }
};

}  // namespace

void producer::check_properties(const client_config& cfg, const producer_options& opts) {
  detail::refuse_overrides(cfg, fixed_properties(opts).list());
}

producer::producer(const client_config& cfg, const producer_options& opts, fatal_callback on_fatal)
    : impl_(std::make_unique<impl>()) {
  impl_->on_fatal = std::move(on_fatal);
  const std::string linger = std::to_string(opts.linger.count());
  const fixed_properties fixed(opts);
  const auto fixed_list = fixed.list();
  auto conf = detail::make_conf(cfg,
                                {
                                    {"linger.ms", linger},
                                    {"socket.keepalive.enable", "true"},
                                },
                                fixed_list);
  rd_kafka_conf_set_dr_msg_cb(conf.get(), &impl::on_delivery);
  rd_kafka_conf_set_error_cb(conf.get(), &impl::on_error);
  rd_kafka_conf_set_opaque(conf.get(), impl_.get());
  impl_->rk = detail::make_handle(RD_KAFKA_PRODUCER, std::move(conf));
  if (opts.serve_on_caller) {
    if (pipe2(impl_->wake.data(), O_NONBLOCK | O_CLOEXEC) != 0)
      throw std::system_error(errno, std::generic_category(), "pipe for delivery reports");
    rd_kafka_queue_t* q = rd_kafka_queue_get_main(impl_->rk.get());
    static constexpr char one = 1;
    rd_kafka_queue_io_event_enable(q, impl_->wake[1], &one, 1);
    rd_kafka_queue_destroy(q);
    // librdkafka writes only when its queue goes from empty to one item: an
    // error queued by its threads before this point would never be
    // signalled, and every later report would wait behind it. One wake-up
    // now serves whatever is there already.
    if (write(impl_->wake[1], &one, 1) != 1)
      throw std::system_error(errno, std::generic_category(), "first wake-up for delivery reports");
    return;
  }
  impl_->poller = std::thread([self = impl_.get()] {
    while (!self->stopping.load(std::memory_order_relaxed)) rd_kafka_poll(self->rk.get(), 50);
  });
}

int producer::report_fd() const { return impl_->wake[0]; }

void producer::serve_reports() {
  // Drain the wake-ups first: a report queued after this still writes one.
  std::array<char, 64> sink{};
  while (read(impl_->wake[0], sink.data(), sink.size()) > 0) {
  }
  rd_kafka_poll(impl_->rk.get(), 0);
}

producer::~producer() {
  impl_->stopping = true;
  if (impl_->poller.joinable()) impl_->poller.join();
  // Records still queued or in flight are purged; poll(0) serves the failed
  // reports already queued for them. A report queued later (a broker
  // thread's purge) is freed with the handle, its callback never run: the
  // server has answered or closed every request by now, so that leaks
  // only the callback's memory, at exit.
  rd_kafka_purge(impl_->rk.get(), RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
  rd_kafka_poll(impl_->rk.get(), 0);
  if (impl_->wake[0] >= 0) {
    rd_kafka_queue_t* q = rd_kafka_queue_get_main(impl_->rk.get());
    rd_kafka_queue_io_event_enable(q, -1, nullptr, 0);
    rd_kafka_queue_destroy(q);
    for (const int fd : impl_->wake) close(fd);
  }
}

enqueue_status producer::produce(const outgoing_record& rec, delivery_callback on_delivery, std::string* why) {
  if (impl_->fatal_seen) {
    if (why) *why = "producer has a fatal error";
    return enqueue_status::fatal;
  }
  rd_kafka_headers_t* hdrs = rd_kafka_headers_new(rec.headers.size());
  for (const auto& h : rec.headers)
    rd_kafka_header_add(hdrs, h.key.data(), static_cast<ssize_t>(h.key.size()), h.value.data(),
                        static_cast<ssize_t>(h.value.size()));
  auto cb = std::make_unique<delivery_callback>(std::move(on_delivery));
  const std::string topic(rec.topic);
  // RD_KAFKA_MSG_F_COPY: the caller's buffers may go away right after.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wold-style-cast"  // librdkafka's RD_KAFKA_V_* macros
  const rd_kafka_resp_err_t err = rd_kafka_producev(
      impl_->rk.get(), RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
      RD_KAFKA_V_KEY(const_cast<char*>(rec.key.data()), rec.key.size()),
      RD_KAFKA_V_VALUE(const_cast<char*>(rec.value.data()), rec.value.size()), RD_KAFKA_V_HEADERS(hdrs),
      RD_KAFKA_V_OPAQUE(cb.get()), RD_KAFKA_V_END);
#pragma GCC diagnostic pop
  if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
    (void)cb.release();  // owned by the delivery report from here on
    return enqueue_status::queued;
  }
  rd_kafka_headers_destroy(hdrs);  // on failure the headers stay ours
  if (why) *why = rd_kafka_err2str(err);
  if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) return enqueue_status::queue_full;
  if (err == RD_KAFKA_RESP_ERR__FATAL) return enqueue_status::fatal;
  if (err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE) return enqueue_status::too_large;
  return enqueue_status::rejected;
}

bool producer::flush(std::chrono::milliseconds timeout) {
  // rd_kafka_flush() serves the reports on this thread (and wakes linger timers).
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (rd_kafka_outq_len(impl_->rk.get()) > 0) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    (void)rd_kafka_flush(impl_->rk.get(), static_cast<int>(std::min<long>(left.count(), 100)));
  }
  return true;
}

int producer::in_flight() const { return rd_kafka_outq_len(impl_->rk.get()); }

producer::topic_state producer::check_topic(const std::string& topic, std::chrono::milliseconds timeout,
                                            std::vector<partition_sync>* short_of_sync,
                                            std::vector<std::int32_t>* leaderless) const {
  rd_kafka_topic_t* rkt = rd_kafka_topic_new(impl_->rk.get(), topic.c_str(), nullptr);
  // NULL for a name librdkafka refuses (over 512 bytes): passed on, it crashed.
  if (!rkt) throw fatal_error("kafka topic handle for " + topic + ": " + rd_kafka_err2str(rd_kafka_last_error()));
  const struct rd_kafka_metadata* md = nullptr;
  const auto err = detail::metadata(impl_->rk.get(), false, rkt, &md, timeout);
  rd_kafka_topic_destroy(rkt);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR || !md) {
    if (md) rd_kafka_metadata_destroy(md);
    if (err == RD_KAFKA_RESP_ERR__AUTHENTICATION) return topic_state::unauthenticated;
    return err == RD_KAFKA_RESP_ERR__SSL ? topic_state::tls_failed : topic_state::unreachable;
  }
  const auto topic_err = md->topic_cnt == 1 ? md->topics[0].err : RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
  const bool found = topic_err == RD_KAFKA_RESP_ERR_NO_ERROR && md->topics[0].partition_cnt > 0;
  if (found && short_of_sync)
    for (int i = 0; i < md->topics[0].partition_cnt; ++i)
      if (const auto& mp = md->topics[0].partitions[i]; mp.isr_cnt < mp.replica_cnt)
        short_of_sync->push_back({mp.id, mp.replica_cnt, mp.isr_cnt});
  if (found && leaderless)
    for (int i = 0; i < md->topics[0].partition_cnt; ++i)
      if (const auto& mp = md->topics[0].partitions[i]; mp.leader < 0) leaderless->push_back(mp.id);
  rd_kafka_metadata_destroy(md);
  if (topic_err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED) return topic_state::unauthorized;
  return found ? topic_state::available : topic_state::missing;
}

std::optional<std::string> producer::fatal_reason() const { return impl_->fatal_reason(); }

std::optional<kafka::refusal> producer::refusal() const { return detail::refusal_of(impl_->rk.get()); }

void producer::inject_fatal_error_for_test() {
  (void)rd_kafka_test_fatal_error(impl_->rk.get(), RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                                  "injected by a test");
}

}  // namespace clerk_sync::kafka
