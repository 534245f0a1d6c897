#include "config/options.hpp"

#include <boost/asio/ip/address.hpp>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <vector>

namespace clerk_sync::config {
namespace {

std::string trim(std::string s) {
  const auto b = s.find_first_not_of(" \t\r");
  const auto e = s.find_last_not_of(" \t\r");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

// Splits `key=value`; throws usage_error naming the key only. A key is
// letters, digits, '.', '_' and '-', as librdkafka's are: a line written
// with Java's other separators (`sasl.password: x=y`, `sasl.password x=`)
// would otherwise make a key of the password's start, and librdkafka's
// "no such property" would repeat it. Such a line is not shown.
std::pair<std::string, std::string> split_property(const std::string& text, const std::string& where) {
  const auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0) throw usage_error(where + ": expected key=value");
  auto key = trim(text.substr(0, eq));
  if (key.empty() || key.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") !=
                         std::string::npos)
    throw usage_error(where + ": expected key=value, the key of letters, digits, '.', '_' and '-' (the line is "
                              "not shown: it may hold a secret)");
  return {std::move(key), trim(text.substr(eq + 1))};
}

// A librdkafka property whose value is a secret (a password, a client
// secret, a private key, a JAAS or OAUTHBEARER config that may hold one).
bool holds_secret(std::string key) {
  std::transform(key.begin(), key.end(), key.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return key.find("password") != std::string::npos || key.find("secret") != std::string::npos ||
         key == "ssl.key.pem" || key == "ssl_key" || key == "sasl.jaas.config" || key == "sasl.oauthbearer.config";
}

// Variables whose empty value CLI11 takes for an unset one, so that the
// default (a broker on this machine, the default topic) would replace it in
// silence. Other variables keep meaning "unset" when empty: a systemd
// drop-in clears one that way (Environment=CLERK_JWT_KEY_FILE=).
constexpr std::array<std::string_view, 2> not_empty_env = {"KAFKA_BROKERS", "CLERK_SYNC_TOPIC"};

// Throws usage_error for such a variable, set but empty, behind an option of
// `app` or of a subcommand it ran that no flag gave.
void refuse_empty_env(const CLI::App& app) {
  for (const CLI::Option* opt : app.get_options()) {
    const auto name = opt->get_envname();
    if (opt->count() > 0 || std::find(not_empty_env.begin(), not_empty_env.end(), name) == not_empty_env.end())
      continue;
    const char* value = std::getenv(name.c_str());
    if (value != nullptr && *value == '\0')
      throw usage_error(name + " is set but empty: give it a value, or remove it for the default " +
                        opt->get_default_str());
  }
  for (const CLI::App* sub : app.get_subcommands()) refuse_empty_env(*sub);
}

// Where the brokers are named: --brokers (KAFKA_BROKERS) or, for an
// operator who keeps a managed cluster's settings in one file, a property
// librdkafka reads as the same setting. The last named wins, as librdkafka
// applies it (so an install that names them in its properties file beside
// the packaged KAFKA_BROKERS goes on working after an upgrade), but never
// in silence: each override is a warning once the log is set up.
struct broker_source {
  const CLI::Option* flag = nullptr;
  std::string named_by;  // where a property named them last, if one did
};

// Warnings found while parsing, said by apply() in the log's own format.
std::vector<std::pair<std::string, std::string>>& parse_warnings() {
  static std::vector<std::pair<std::string, std::string>> pending;
  return pending;
}

// Adds an operator's property to cfg, or for the brokers' own (checked as
// --brokers is) makes it cfg.brokers; throws usage_error naming `where`.
void add_property(kafka::client_config& cfg, broker_source& brokers, std::pair<std::string, std::string> kv,
                  const std::string& where) {
  if (kv.first != "bootstrap.servers" && kv.first != "metadata.broker.list") {
    cfg.properties.push_back(std::move(kv));
    return;
  }
  const std::string named = where + ": " + kv.first;
  if (const auto why = broker_list()(kv.second); !why.empty()) throw usage_error(named + ": " + why);
  const std::string earlier = !brokers.named_by.empty()   ? brokers.named_by
                              : brokers.flag->count() > 0 ? std::string("--brokers (KAFKA_BROKERS)")
                                                          : std::string();
  if (!earlier.empty() && kv.second != cfg.brokers)
    parse_warnings().emplace_back(named, "names the brokers again and wins over " + earlier + " (" +
                                             cfg.brokers + "): keep one");
  cfg.brokers = std::move(kv.second);
  brokers.named_by = named;
}

void load_kafka_properties_file(const std::string& path, kafka::client_config& cfg, broker_source& brokers) {
  std::ifstream in(path);
  if (!in) throw usage_error("cannot read kafka properties file " + path);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    line = trim(line);
    if (line.empty() || line[0] == '#') continue;
    const auto where = path + ":" + std::to_string(n);
    add_property(cfg, brokers, split_property(line, where), where);
  }
}

}  // namespace

void check_route_path(const std::string& path, std::initializer_list<std::string_view> probes) {
  if (path.empty() || path.front() != '/') throw usage_error("--path must start with '/'");
  if (path.find_first_of("?# \t") != std::string::npos)
    throw usage_error("--path must be a path alone, without '?', '#' or spaces");
  for (const auto probe : probes)
    if (path == probe) throw usage_error("--path must not be " + path + ", the probe's");
}

CLI::Validator seconds_between(double min, double max) {
  return CLI::Validator(
      [min, max](std::string& value) -> std::string {
        double v = 0;
        if (!CLI::detail::lexical_cast(value, v) || !std::isfinite(v))
          return "expected a number of seconds, got " + value;
        if (v < min || v > max)
          return "expected " + CLI::detail::to_string(min) + " to " + CLI::detail::to_string(max) + " seconds, got " +
                 value;
        return {};
      },
      "SECONDS");
}

CLI::Validator broker_list() {
  return CLI::Validator(
      [](std::string& value) -> std::string {
        const std::string form = " (host:port[,host:port])";
        bool any = false;
        std::string_view rest = value;
        while (!rest.empty()) {
          // As librdkafka 2.0.2 reads bootstrap.servers
          // (rd_kafka_brokers_add0, rd_kafka_broker_name_parse): commas and
          // spaces before an entry are skipped; the entry runs to the next
          // comma.
          if (rest.front() == ',' || rest.front() == ' ') {
            rest.remove_prefix(1);
            continue;
          }
          const auto comma = rest.find(',');
          const std::string entry = trim(std::string(rest.substr(0, comma)));
          rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
          if (entry.empty()) continue;
          any = true;
          // Two names with a space between are one host name to librdkafka,
          // which never resolves.
          if (entry.find_first_of(" \t") != std::string::npos)
            return "broker \"" + entry + "\" holds a space: separate brokers with commas" + form;
          std::string_view address = entry;
          if (const auto scheme = address.find("://"); scheme != std::string_view::npos) {
            if (scheme == 0) return "broker \"" + entry + "\" has an empty protocol name" + form;
            address.remove_prefix(scheme + 3);
            address = address.substr(0, address.find('/'));  // a URL's path is ignored
          }
          // The port: after the only ':', or after "]:"; an address with
          // more than one ':' and no brackets is IPv6, on the default port.
          const auto last = address.rfind(':');
          const bool has_port =
              last != std::string_view::npos && (address.find(':') == last || (last > 0 && address[last - 1] == ']'));
          const auto host = address.substr(0, has_port ? last : address.size());
          if (host.empty() || host == "[]") return "broker \"" + entry + "\" has no host" + form;
          if (has_port) {
            const auto port = address.substr(last + 1);
            unsigned n = 0;
            const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), n);
            if (port.empty() || ec != std::errc() || end != port.data() + port.size() || n == 0 || n > 65535)
              return "broker \"" + entry + "\": the port must be a number 1..65535" + form;
          }
        }
        return any ? std::string() : "no broker given" + form;
      },
      "BROKERS");
}

CLI::Validator topic_name() {
  return CLI::Validator(
      [](std::string& value) -> std::string {
        const bool ok = !value.empty() && value.size() <= 249 && value != "." && value != ".." &&
                        std::all_of(value.begin(), value.end(), [](char ch) {
                          return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                                 ch == '.' || ch == '_' || ch == '-';
                        });
        return ok ? std::string()
                  : "\"" + (value.size() > 80 ? value.substr(0, 80) + "..." : value) +
                        "\" is not a Kafka topic name (1 to 249 of letters, digits, '.', '_' and '-')";
      },
      "TOPIC");
}

CLI::Validator origin(bool app_schemes) {
  return CLI::Validator(
      [app_schemes](std::string& value) -> std::string {
        value = trim(value);
        const auto sep = value.find("://");
        const std::string scheme = sep == std::string::npos ? std::string() : value.substr(0, sep);
        const std::string rest = sep == std::string::npos ? std::string() : value.substr(sep + 3);
        // Those a token's azp is known to hold besides http(s): browser
        // extensions' and app shells' web views'. A list, not any scheme:
        // a typo (htps://) would pass and refuse every token.
        constexpr std::array<std::string_view, 6> apps = {"chrome-extension", "moz-extension", "safari-web-extension",
                                                          "capacitor",        "ionic",         "tauri"};
        const bool app = app_schemes && std::find(apps.begin(), apps.end(), scheme) != apps.end();
        // As a browser spells it: lower case, no empty or default port.
        const bool ok = (scheme == "https" || scheme == "http" || app) && !rest.empty() && rest.front() != ':' &&
                        rest.back() != ':' && !(scheme == "https" && rest.ends_with(":443")) &&
                        !(scheme == "http" && rest.ends_with(":80")) &&
                        std::all_of(rest.begin(), rest.end(), [](char ch) {
                          return ch > ' ' && ch < '\x7f' && ch != '/' && ch != '?' && ch != '#' && ch != '@' &&
                                 !(ch >= 'A' && ch <= 'Z');
                        });
        return ok ? std::string()
                  : "\"" + value + "\" is not an origin (scheme://host[:port] as a browser sends it, lower case "
                    "and no default port, which a token's azp holds exactly: e.g. https://app.example" +
                        (app_schemes ? std::string(", or an extension's or app shell's: chrome-extension://<id>, "
                                                   "moz-extension://<uuid>, safari-web-extension://<uuid>, "
                                                   "capacitor://localhost, ionic://localhost, tauri://localhost)")
                                     : std::string(")"));
      },
      "ORIGIN");
}

void add_kafka_options(CLI::App& app, kafka::client_config& cfg) {
  auto brokers = std::make_shared<broker_source>();
  brokers->flag = app.add_option("--brokers", cfg.brokers, "Kafka bootstrap servers, host:port[,host:port]")
                      ->envname("KAFKA_BROKERS")
                      ->check(broker_list())
                      ->capture_default_str();
  app.add_option_function<std::vector<std::string>>(
         "--kafka-property",
         [&cfg, brokers](const std::vector<std::string>& props) {
           for (const auto& p : props) {
             auto kv = split_property(p, "--kafka-property");
             // Any user can read a process's arguments (ps, /proc): the
             // value is not repeated, only where it belongs.
             if (holds_secret(kv.first))
               throw usage_error("--kafka-property " + kv.first +
                                 ": a secret on the command line is readable by every user of the machine; put it in "
                                 "--kafka-properties-file (CLERK_SYNC_KAFKA_PROPERTIES_FILE)");
             add_property(cfg, *brokers, std::move(kv), "--kafka-property");
           }
         },
         "Any librdkafka property, key=value (repeatable); put passwords in the properties file")
      ->type_name("KEY=VALUE");
  app.add_option_function<std::string>(
         "--kafka-properties-file",
         [&cfg, brokers](const std::string& path) { load_kafka_properties_file(path, cfg, *brokers); },
         "File of librdkafka properties, one key=value a line (SASL/TLS)")
      ->envname("CLERK_SYNC_KAFKA_PROPERTIES_FILE");
}

void add_log_options(CLI::App& app, log_options& opts) {
  app.add_option("--log-format", opts.format, "logfmt or json")
      ->envname("CLERK_SYNC_LOG_FORMAT")
      ->check(CLI::IsMember({"logfmt", "json"}))
      ->capture_default_str();
  app.add_option("--log-level", opts.level, "debug, info, warn or error")
      ->envname("CLERK_SYNC_LOG_LEVEL")
      ->check(CLI::IsMember({"debug", "info", "warn", "error"}))
      ->capture_default_str();
}

void apply(const log_options& opts) {
  const auto f = log::parse_format(opts.format);
  const auto l = log::parse_level(opts.level);
  if (!f) throw usage_error("unknown log format '" + opts.format + "'");
  if (!l) throw usage_error("unknown log level '" + opts.level + "'");
  log::init(*f, *l);
  for (const auto& [setting, outcome] : parse_warnings())
    log::warn("brokers_named_twice", {{"setting", setting}, {"outcome", outcome}});
  parse_warnings().clear();
}

namespace {

// The log format asked for, read from the raw arguments and environment
// (the last --log-format given, else CLERK_SYNC_LOG_FORMAT): a bad setting
// that stops parsing before --log-format is read, or within it, is still
// said in the format asked for. Nothing when none is valid.
void use_asked_log_format(int argc, char** argv) {
  std::string asked;
  if (const char* env = std::getenv("CLERK_SYNC_LOG_FORMAT")) asked = env;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--log-format" && i + 1 < argc) asked = argv[i + 1];
    else if (arg.starts_with("--log-format=")) asked = arg.substr(std::string_view("--log-format=").size());
  }
  if (const auto f = log::parse_format(asked)) log::init(*f, log::level::info);
}

}  // namespace

std::optional<int> parse(CLI::App& app, int argc, char** argv) {
  const auto refuse = [&](std::string_view what) {
    use_asked_log_format(argc, argv);
    return report_exit(app.get_name(), "bad_setting", what, exit_usage);
  };
  try {
    app.parse(argc, argv);
    refuse_empty_env(app);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const usage_error& e) {
    return refuse(e.what());
  } catch (const CLI::ExtrasError&) {
    // CLI11 would repeat the stray arguments: one of them may be a secret
    // pasted in the wrong place, so name none.
    return refuse("unexpected arguments (see --help)");
  } catch (const CLI::RequiredError& e) {
    // CLI11 says "A subcommand is required" of `ctl nosuch` too, as if none
    // had been given: say that none of those given is known.
    if (std::string_view(e.what()).starts_with("A subcommand is required"))
      return refuse("no subcommand given, or none it knows (see --help)");
    return refuse(e.what());
  } catch (const CLI::ParseError& e) {
    // One clear line, never the value (it may be a secret).
    return refuse(e.what());
  }
  return std::nullopt;
}

int report_exit(std::string_view program, std::string_view msg, std::string_view what, int exit_code) {
  log::error(msg, {{"program", program}, {"error", what}, {"exit_code", exit_code}});
  std::fflush(stderr);
  return exit_code;
}

listen_address parse_listen(const std::string& text) {
  const auto bad = [&](const char* why) { return config::usage_error("bad listen address '" + text + "': " + why); };
  const auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) throw bad("expected host:port");
  std::string host = text.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  const std::string port_text = text.substr(colon + 1);
  unsigned port = 0;
  const auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || ec != std::errc() || end != port_text.data() + port_text.size() || port == 0 ||
      port > 65535)
    throw bad("port must be 1..65535");
  boost::system::error_code aec;
  (void)boost::asio::ip::make_address(host, aec);
  if (aec) throw bad("host must be a numeric IP address");
  return {host, static_cast<std::uint16_t>(port)};
}

}  // namespace clerk_sync::config
