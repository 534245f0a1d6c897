#!/usr/bin/env bash
# The systemd-boot layer: the Debian package installed and run as an operator
# would, under a real systemd. Builds the package (scripts/package), boots a
# cached Debian 12 rootfs with systemd as PID 1 (systemd-nspawn, throwaway
# overlay), `apt-get install ./clerk-sync_….deb` inside, writes the
# environment file and the webhook secret, starts the receiver and the four
# consumers against the test broker on the host's loopback, and checks what
# the units promise. Everything it starts (the box included) is stopped on
# exit, whatever failed.
#
# Environment: CLERK_SYNC_TEST_BROKERS (scripts/test sets it), BUILD_DIR
# (default build). Its findings and figures: BUILD_DIR/systemd-boot/last-run.log. The rootfs is cached in .local/systemd-boot/ (git-ignored);
# delete that folder to rebuild it.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
build=${BUILD_DIR:-$repo/build}
brokers=${CLERK_SYNC_TEST_BROKERS:?CLERK_SYNC_TEST_BROKERS is not set: run through scripts/test}

# What the run saw, kept after a passing ctest run (which shows no output).
mkdir -p "$build/systemd-boot"
report="$build/systemd-boot/last-run.log"
: >"$report"
say() { echo "systemd-boot: $*" | tee -a "$report"; }
fail() { echo "systemd-boot: FAIL: $*" | tee -a "$report" >&2; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# systemd-nspawn and the cgroup writes below need root; sudo is not enough.
[ "$(id -u)" = 0 ] || fail "this test boots a container and must run as root"

scripts/bootstrap   # systemd-container, mmdebstrap, lintian and the rest

# --- the package -------------------------------------------------------------
deb=$(BUILD_DIR="$build" PACKAGE_DIR="$build/systemd-boot" scripts/package | tail -n 1)
[ -f "$deb" ] || fail "scripts/package printed no package path"
say "package $(basename "$deb")"

# --- the rootfs, built once ----------------------------------------------------
# The mirror is the host's own: its apt sources are handed to mmdebstrap,
# which also leaves them in the box for apt-get install.
sources=()
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] && grep -qE '^[[:space:]]*(deb|URIs:)' "$f" && sources+=("$f")
done
((${#sources[@]})) || fail "the host has no apt sources to take the mirror from"
include=systemd,systemd-sysv,dbus,libnss-systemd,iproute2,procps,sqlite3
key=$( (echo "$include"; cat "${sources[@]}") | sha256sum | cut -c1-12)
cache="$repo/.local/systemd-boot"
rootfs="$cache/rootfs-$key"
if [ ! -f "$rootfs/.complete" ]; then
  say "building the Debian 12 rootfs once into .local/systemd-boot (a minute or two)"
  mkdir -p "$cache"
  rm -rf "$rootfs.tmp"
  mmdebstrap --quiet --variant=minbase --include="$include" --skip=cleanup/apt/lists \
    bookworm "$rootfs.tmp" "${sources[@]}" >&2
  touch "$rootfs.tmp/.complete"
  rm -rf "$rootfs"
  mv "$rootfs.tmp" "$rootfs"
  # Older rootfs (other sources or packages) are of no further use.
  find "$cache" -mindepth 1 -maxdepth 1 -name 'rootfs-*' ! -name "rootfs-$key" -exec rm -rf {} +
fi

# --- the box -----------------------------------------------------------------
name="clerk-sync-boot-$$"
cgroups=()
for h in systemd unified; do
  [ -d "/sys/fs/cgroup/$h" ] && [ ! -d "/sys/fs/cgroup/$h/$name" ] && cgroups+=("/sys/fs/cgroup/$h/$name")
done
nspawn_pid=""
box_pid=""
workdir=$(mktemp -d)

cleanup() {
  local rc=$?
  set +e
  if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
    kill -TERM "$nspawn_pid"  # a clean halt of the box
    for _ in $(seq 1 60); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$nspawn_pid" 2>/dev/null && kill -KILL "$nspawn_pid"
  fi
  # Without systemd on the host nothing reaps the box's cgroups: end what is
  # left in them, by pid, and remove them deepest first.
  local cg d p
  for cg in "${cgroups[@]}"; do
    [ -d "$cg" ] || continue
    for _ in 1 2 3; do
      while read -r d; do
        while read -r p; do [ -n "$p" ] && [ "$p" != 0 ] && kill -KILL "$p" 2>/dev/null; done <"$d/cgroup.procs"
      done < <(find "$cg" -type d)
      sleep 0.2
      find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null
      [ -d "$cg" ] || break
    done
    [ -d "$cg" ] && echo "systemd-boot: could not remove cgroup $cg" >&2
  done
  rm -rf "$workdir"
  if ((rc)); then echo "systemd-boot: failed (exit $rc); box stopped" >&2; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

t_boot=$(now)
(
  # nspawn's cgroups go under one of ours, so that cleanup can find them.
  for cg in "${cgroups[@]}"; do mkdir -p "$cg" && echo "$BASHPID" >"$cg/cgroup.procs"; done
  exec setsid systemd-nspawn --quiet --boot --directory="$rootfs" --machine="$name" --register=no \
    --keep-unit --volatile=overlay --console=pipe --link-journal=no </dev/null >"$workdir/console.log" 2>&1
) &
nspawn_pid=$!

# The box's PID 1: a process under nspawn whose innermost pid is 1.
for _ in $(seq 1 100); do
  for s in /proc/[0-9]*/status; do
    pid=${s#/proc/}; pid=${pid%/status}
    nspid=$(sed -n 's/^NSpid:[[:space:]]*//p' "$s" 2>/dev/null) || continue
    set -- $nspid
    [ $# -ge 2 ] && [ "${!#}" = 1 ] || continue
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || continue
    ppid=$(sed -n 's/^PPid:[[:space:]]*//p' "$s")
    # Its parent is our nspawn (or a child of it).
    if [ "$ppid" = "$nspawn_pid" ] || grep -qs "^PPid:[[:space:]]*$nspawn_pid\$" "/proc/$ppid/status"; then
      box_pid=$pid; break 2
    fi
  done
  kill -0 "$nspawn_pid" 2>/dev/null || { cat "$workdir/console.log" >&2; fail "systemd-nspawn exited"; }
  sleep 0.2
done
[ -n "$box_pid" ] || fail "no PID 1 of the box found"

box() { nsenter -t "$box_pid" -a "$@"; }
state=$(timeout 120 nsenter -t "$box_pid" -a systemctl is-system-running --wait || true)
[ "$state" = running ] || { box systemctl --failed --no-pager >&2 || true; fail "the box's systemd is '$state', not running"; }
boot_s=$(elapsed "$t_boot" "$(now)")
say "box booted: systemd running in ${boot_s} s"

# --- install -----------------------------------------------------------------
box sh -c 'cat >/root/clerk-sync.deb' <"$deb"
debname=$(basename "$deb")
box sh -c "mv /root/clerk-sync.deb /root/$debname"
if ! box sh -c "cd /root && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ./$debname" \
    >"$workdir/apt.log" 2>&1; then
  # The cached package lists may be older than the mirror: refresh once.
  box sh -c 'apt-get update -q' >>"$workdir/apt.log" 2>&1 || true
  box sh -c "cd /root && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ./$debname" \
    >>"$workdir/apt.log" 2>&1 || { tail -n 30 "$workdir/apt.log" >&2; fail "apt-get install ./$debname failed"; }
fi
say "installed with apt-get: $(grep -c '^Setting up' "$workdir/apt.log") packages set up"

units=(clerk-sync-receiver clerk-sync-consumer@users clerk-sync-consumer@balances clerk-sync-consumer@referrals
       clerk-sync-consumer@sessions)
for u in "${units[@]}"; do
  [ "$(box systemctl is-enabled "$u" 2>/dev/null || true)" = disabled ] || fail "$u is enabled by the install"
  [ "$(box systemctl is-active "$u" 2>/dev/null || true)" = inactive ] || fail "$u was started by the install"
done
envfile=/etc/clerk-sync/clerk-sync.env
example=/usr/share/clerk-sync/clerk-sync.env.example
for f in /lib/systemd/system/clerk-sync-receiver.service '/lib/systemd/system/clerk-sync-consumer@.service' \
         /usr/bin/clerk-sync-receiver /usr/share/doc/clerk-sync/copyright /usr/share/clerk-sync/schemas/sql "$example"; do
  box test -e "$f" || fail "the package did not install $f"
done
# The environment file is the operator's, not a conffile (an upgrade would
# stop at dpkg's prompt): the postinst made it from the example, as the
# package used to ship it (root, 0644).
conffiles=$(box dpkg-query -W -f='${Conffiles}' clerk-sync)
[ -z "$conffiles" ] || fail "the package has conffiles: $conffiles"
[ "$(box stat -c '%U:%G %a' "$envfile")" = "root:root 644" ] ||
  fail "$envfile is $(box stat -c '%U:%G %a' "$envfile"), not root:root 644"
box cmp -s "$example" "$envfile" || fail "$envfile is not a copy of $example"

# --- configure, as an operator would -------------------------------------------
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
topic="clerk.events.boot-$$-$RANDOM"
secret="whsec_$(head -c 24 /dev/urandom | base64 -w0)"
box sh -c "sed -i \
  -e 's|^KAFKA_BROKERS=.*|KAFKA_BROKERS=$brokers|' \
  -e 's|^CLERK_SYNC_TOPIC=.*|CLERK_SYNC_TOPIC=$topic|' \
  -e 's|^CLERK_SYNC_LISTEN=.*|CLERK_SYNC_LISTEN=127.0.0.1:$port|' \
  /etc/clerk-sync/clerk-sync.env && echo CLERK_SYNC_GROUP_PREFIX=clerk-sync-boot-$$ >>/etc/clerk-sync/clerk-sync.env"
# The secret's path for clerk-sync-ctl sign and send, as the example allows:
# the receiver must still read its credential copy (the file itself is
# root's alone), whatever the environment file says.
box sh -c 'echo CLERK_WEBHOOK_SECRET_FILE=/etc/clerk-sync/webhook-secret >>/etc/clerk-sync/clerk-sync.env'
box sh -c 'set -a && . /etc/clerk-sync/clerk-sync.env && set +a &&
  clerk-sync-ctl topic ensure --partitions 3 --replication-factor 1' >"$workdir/topic.log" 2>&1 ||
  { cat "$workdir/topic.log" >&2; fail "clerk-sync-ctl topic ensure failed"; }

# The forward auth's key pair (the private key never leaves the work folder),
# the public key where the unit's LoadCredential= takes it; the tokens are
# signed with openssl below.
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$workdir/jwt.key" 2>/dev/null ||
  fail "openssl could not make a key"
openssl pkey -in "$workdir/jwt.key" -pubout | box sh -c 'cat >/etc/clerk-sync/clerk-jwt-key.pem'
auth_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
box sh -c "echo CLERK_SYNC_AUTH_LISTEN=127.0.0.1:$auth_port >>/etc/clerk-sync/clerk-sync.env"
show() { box systemctl show -P "$2" "$1"; }

# --- no environment file: the start fails once, with a line, and is not retried ------
# AssertPathExists= fails the start job before EnvironmentFile= is read, which
# would fail each start (result resources) and be restarted up to the limit.
box mv "$envfile" "$envfile.away"
if box systemctl start clerk-sync-receiver 2>"$workdir/start.err"; then
  fail "the receiver started without $envfile"
fi
grep -qF 'Assertion failed on job for clerk-sync-receiver.service' "$workdir/start.err" ||
  { cat "$workdir/start.err" >&2; fail "the receiver's start without $envfile did not fail its assertion"; }
receiver_status="$(show clerk-sync-receiver ActiveState) $(show clerk-sync-receiver NRestarts)"
[ "$receiver_status" = "inactive 0" ] ||
  fail "receiver without $envfile: state and restarts are '$receiver_status', not 'inactive 0'"
box mv "$envfile.away" "$envfile"
box systemctl reset-failed clerk-sync-receiver 2>/dev/null || true
say "clerk-sync-receiver without $envfile: the assertion failed the start once, not restarted"

# --- the receiver started before its secret was written: failed, not restarted ------
# systemd fails LoadCredential= for a missing file before exec: status 243,
# which restarting cannot fix any more than exit 2.
if box systemctl start clerk-sync-receiver 2>/dev/null; then fail "the receiver started without its secret"; fi

# --- auth started before any consumer ran: one line and exit 2, not restarted ------
# No consumer has created the state directory yet, which the auth unit binds.
box test ! -e /var/lib/private/clerk-sync || fail "the state directory exists before any consumer ran"
if box systemctl start clerk-sync-auth 2>/dev/null; then fail "auth started without a database"; fi
# A restart systemd has scheduled shows at once as ActiveState=activating
# (auto-restart); failed means none will come, however loaded the host.
unit_status() { echo "$(show "$1" ActiveState) $(show "$1" Result) $(show "$1" ExecMainStatus) $(show "$1" NRestarts)"; }
receiver_status=$(unit_status clerk-sync-receiver)
[ "$receiver_status" = "failed exit-code 243 0" ] ||
  fail "receiver without its secret: state, result, status, restarts are '$receiver_status', not 'failed exit-code 243 0'"
box systemctl reset-failed clerk-sync-receiver
say "clerk-sync-receiver before its secret was written: status 243 (CREDENTIALS), not restarted"
auth_status=$(unit_status clerk-sync-auth)
[ "$auth_status" = "failed exit-code 2 0" ] ||
  { box journalctl -u clerk-sync-auth --no-pager -o cat | tail -n 5 >&2 || true
    fail "auth without a database: state, result, status, restarts are '$auth_status', not 'failed exit-code 2 0'"; }
auth_journal=$(box journalctl -u clerk-sync-auth --no-pager -o cat)
[ "$(grep -cF 'msg=bad_setting' <<<"$auth_journal")" = 1 ] &&
  grep -qF '/run/clerk-sync-auth/db/clerk-sync.db' <<<"$auth_journal" ||
  { echo "$auth_journal" >&2; fail "auth's failure is not one bad_setting line naming the database"; }
# A line's level is its journal priority (the <3> that journald strips):
# journalctl -p err finds the error line, and it is stored without the prefix.
auth_errors=$(box journalctl -u clerk-sync-auth -p err --no-pager -o cat)
grep -qE '^ts=[^ ]+ level=error msg=bad_setting ' <<<"$auth_errors" ||
  { echo "$auth_journal" >&2; fail "journalctl -p err does not show auth's bad_setting line as it was written"; }
box systemctl reset-failed clerk-sync-auth
say "clerk-sync-auth before any consumer ran: exit 2, not restarted, its line names the database, at priority err"
# The secret travels on stdin, never on a command line.
box sh -c 'umask 077 && cat >/etc/clerk-sync/webhook-secret' <<<"$secret"

# --- a stateless unit that keeps failing is restarted for as long as it fails -------
# What fails the receiver or auth may pass by itself (a listen address not
# up yet, a flapping cluster, a database locked for a while): a start limit
# would leave it failed for good. Here it cannot bind (192.0.2.1 is on no
# interface: exit 1, listen_failed), restarted every 100 ms by a drop-in,
# past the 10 starts in 300 s the units once allowed. $1: the unit, $2: its
# ExecStart listening there.
restarted_without_limit() {
  local unit=$1 exec=$2 dropin=/run/systemd/system/$1.service.d t restarts=0 restarts_s result lines
  box mkdir -p "$dropin"
  box sh -c "cat >$dropin/zz-boot-test.conf" <<UNIT
[Service]
RestartSec=100ms
ExecStart=
ExecStart=$exec
UNIT
  box systemctl daemon-reload
  t=$(now)
  box systemctl start --no-block "$unit"
  for _ in $(seq 1 600); do
    restarts=$(show "$unit" NRestarts)
    [ "$(show "$unit" ActiveState)" = failed ] && break
    ((restarts >= 15)) && break
    sleep 0.1
  done
  restarts_s=$(elapsed "$t" "$(now)")
  result=$(show "$unit" Result)
  box systemctl stop "$unit"
  box rm -r "$dropin"
  box systemctl daemon-reload
  box systemctl reset-failed "$unit" 2>/dev/null || true
  ((restarts >= 15)) || fail "$unit, unable to listen, was restarted $restarts times, then left (result $result)"
  lines=$(box journalctl -u "$unit" --no-pager -o cat | grep -c 'level=error msg=listen_failed' || true)
  ((lines >= 15)) || fail "$unit's $restarts failed starts left $lines listen_failed lines"
  say "$unit unable to listen: restarted $restarts times in ${restarts_s} s, a listen_failed line each, no start limit"
}
restarted_without_limit clerk-sync-receiver \
  '/usr/bin/clerk-sync-receiver --secret-file %d/webhook-secret --listen 192.0.2.1:8080'

# --- start: Type=notify means start returns once READY=1 came ------------------
t_start=$(now)
box systemctl start "${units[@]}" || { box systemctl status --no-pager "${units[@]}" >&2 || true; fail "start failed"; }
ready_s=$(elapsed "$t_start" "$(now)")
say "5 units started and ready (READY=1) in ${ready_s} s"
for u in "${units[@]}"; do
  [ "$(show "$u" Type)" = notify ] || fail "$u is not Type=notify"
  [ "$(show "$u" ActiveState)/$(show "$u" SubState)" = active/running ] || fail "$u is not active/running"
done
# auth opens the database before it listens: tried once the consumers made it.
restarted_without_limit clerk-sync-auth \
  '/usr/bin/clerk-sync-auth --db /run/clerk-sync-auth/db/clerk-sync.db --listen 192.0.2.1:8081'


# --- the sandbox applies to every main process ---------------------------------
mainpid() {
  local p
  p=$(show "$1" MainPID)
  [[ "$p" =~ ^[1-9][0-9]*$ ]] || fail "$1 has no main process (MainPID=$p)"
  echo "$p"
}
declare -A uid_of
sandboxed() {  # unit
  local u=$1 pid status uid
  pid=$(mainpid "$u")
  status=$(box cat "/proc/$pid/status")
  field() { awk -v k="$1:" '$1 == k { print $2 }' <<<"$status"; }
  [ "$(field Seccomp)" = 2 ] || fail "$u: Seccomp is $(field Seccomp), not 2"
  [ "$(field NoNewPrivs)" = 1 ] || fail "$u: NoNewPrivs is $(field NoNewPrivs), not 1"
  for c in CapInh CapPrm CapEff CapBnd CapAmb; do
    [ "$(field "$c")" = 0000000000000000 ] || fail "$u: $c is $(field "$c")"
  done
  uid=$(field Uid)
  ((uid >= 61184 && uid <= 65519)) || fail "$u runs as uid $uid, not a dynamic one"
  uid_of[$u]=$uid
  say "$u: pid $pid uid $uid Seccomp 2 NoNewPrivs 1 no capabilities"
}
for u in "${units[@]}"; do sandboxed "$u"; done
for u in "${units[@]:2}"; do
  [ "${uid_of[$u]}" = "${uid_of[clerk-sync-consumer@users]}" ] || fail "$u does not share the consumers' user"
done
[ "${uid_of[clerk-sync-receiver]}" != "${uid_of[clerk-sync-consumer@users]}" ] ||
  fail "the receiver shares its uid with the consumers"

# --- SIGHUP, an operator's "reload", stops no unit ---------------------------------
# By its default action it would end each process without a line, an end
# systemd counts as clean: Restart=on-failure would leave the unit stopped.
declare -A pid_before
for u in "${units[@]}"; do pid_before[$u]=$(mainpid "$u"); done
box systemctl kill -s HUP "${units[@]}"
for u in "${units[@]}"; do
  for _ in $(seq 50); do
    box journalctl -u "$u" --no-pager -o cat | grep -q 'msg=signal_ignored signal=SIGHUP' && break
    sleep 0.1
  done
  box journalctl -u "$u" --no-pager -o cat | grep -q 'msg=signal_ignored signal=SIGHUP' ||
    fail "$u: no signal_ignored line after SIGHUP"
  [ "$(show "$u" ActiveState)/$(show "$u" SubState)" = active/running ] || fail "$u is not running after SIGHUP"
  [ "$(mainpid "$u")" = "${pid_before[$u]}" ] || fail "$u was restarted after SIGHUP"
done
say "SIGHUP to the 5 units: a signal_ignored line each, all still running as the same process"

# --- signed events over HTTP end as rows ----------------------------------------
url="http://127.0.0.1:$port/webhooks/clerk"
ctl="$build/app/ctl/clerk-sync-ctl"
[ -x "$ctl" ] || ctl=$(find "$build/app" -name clerk-sync-ctl -type f -perm -u+x | head -n 1)
msg="msg_sdboot$$x$RANDOM"
fixture=tests/fixtures/clerk/user.created.json
fixture_user=$(sed -n 's/^    "id": "\(user_[^"]*\)".*/\1/p' "$fixture" | head -n 1)
[ -n "$fixture_user" ] || fail "no user id in $fixture"
headers=()
while IFS= read -r h; do headers+=(-H "$h"); done < <(CLERK_WEBHOOK_SECRET=$secret "$ctl" sign --id "$msg" "$fixture")
code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 30 -H 'content-type: application/json' "${headers[@]}" \
  --data-binary @"$fixture" "$url")
[ "$code" = 200 ] || [ "$code" = 204 ] || fail "the signed fixture got HTTP $code"
generated=40
CLERK_WEBHOOK_SECRET=$secret "$ctl" send --url "$url" --generate "$generated" --seed "$$" >"$workdir/send.log" 2>&1 ||
  { cat "$workdir/send.log" >&2; fail "clerk-sync-ctl send failed"; }
expected=$((generated + 1))
sql() { box sqlite3 -readonly /var/lib/clerk-sync/clerk-sync.db "$1" 2>/dev/null; }
# Caught up: projection $1's stored offsets cover $2 records, within 120 s (a
# skipped event leaves no ledger row, so the ledger cannot be counted).
wait_consumed() {
  local n=0
  for _ in $(seq 1 240); do
    n=$(sql "SELECT coalesce(sum(next_offset), 0) FROM kafka_offsets WHERE projection = '$1' AND topic = '$topic'" ||
      echo 0)
    [ "${n:-0}" -ge "$2" ] && return 0
    sleep 0.5
  done
  fail "projection $1 consumed $n of $2 events"
}
for p in users balances referrals sessions; do wait_consumed "$p" "$expected"; done
[ "$(sql "SELECT count(*) FROM applied_events WHERE svix_id = '$msg' AND projection = 'users'")" = 1 ] ||
  fail "$msg is not in the users projection's ledger"
[ "$(sql "SELECT count(*) FROM users WHERE id = '$fixture_user'")" = 1 ] || fail "no users row for $fixture_user"
rows=""
for t in users balances referrals sessions; do
  c=$(sql "SELECT count(*) FROM $t")
  [ "${c:-0}" -gt 0 ] || fail "table $t is empty"
  rows+=" $t=$c"
done
say "$expected signed events consumed by each projection; rows:$rows"

# --- journald keeps every line of a burst of real deliveries --------------------------
# journald drops a unit's lines past its rate limit (by default 10,000 of a
# priority per 30 s, scaled with free space); a consumer catching up writes
# tens of thousands of event lines a second, and a receiver a line per
# verified delivery. The units lift the limit for themselves: here journald's
# own is lowered below a few hundred deliveries, which must all keep their
# lines, the receiver's and the consumer's.
box sh -c 'mkdir -p /etc/systemd/journald.conf.d &&
  printf "[Journal]\nRateLimitIntervalSec=30s\nRateLimitBurst=20\n" >/etc/systemd/journald.conf.d/boot-test.conf &&
  systemctl restart systemd-journald'
burst=400
CLERK_WEBHOOK_SECRET=$secret "$ctl" send --url "$url" --generate "$burst" --seed "$(($$ + 1))" >"$workdir/send.log" 2>&1 ||
  { cat "$workdir/send.log" >&2; fail "clerk-sync-ctl send of $burst events failed"; }
expected=$((expected + burst))
wait_consumed users "$expected"
# Every delivery so far has its published line, and every event the users
# projection applied (a ledger row each) its outcome=applied line; counted
# from the start (a cursor taken across journald's restart skipped one).
# Lines reach the journal in blocks (every 100 ms) and journald may lag
# under load: a count short of the mark is looked at again.
ledger=$(sql "SELECT count(*) FROM applied_events WHERE projection = 'users'")
# Past what journald's lowered limit lets through in its window: 20 lines,
# times at most 6 for its free space.
[ "${ledger:-0}" -gt 120 ] || fail "the users projection applied ${ledger:-0} events, too few to cross the limit"
published=0 applied=0
for _ in $(seq 1 40); do
  box journalctl -u clerk-sync-receiver --no-pager -o cat >"$workdir/receiver.journal"
  box journalctl -u clerk-sync-consumer@users --no-pager -o cat >"$workdir/unit.journal"
  published=$(grep -c ' msg=published ' "$workdir/receiver.journal" || true)
  applied=$(grep ' msg=event ' "$workdir/unit.journal" | grep -c ' outcome=applied ' || true)
  ((published >= expected && applied >= ledger)) && break
  sleep 0.5
done
((published >= expected)) ||
  fail "the receiver's journal holds $published published lines for $expected deliveries (journald's rate limit?)"
((applied >= ledger)) ||
  fail "clerk-sync-consumer@users's journal holds $applied outcome=applied lines for $ledger applied events (journald's rate limit?)"
box sh -c 'rm /etc/systemd/journald.conf.d/boot-test.conf && systemctl restart systemd-journald'
say "journal: $burst more deliveries; all $published published lines and $applied users outcome=applied lines kept past journald's lowered rate limit"

# --- forward auth reads the consumers' database as a user of its own --------------
box systemctl start clerk-sync-auth || { box systemctl status --no-pager clerk-sync-auth >&2 || true; fail "auth start failed"; }
[ "$(show clerk-sync-auth ActiveState)" = active ] || fail "clerk-sync-auth is not active"
sandboxed clerk-sync-auth
[ "${uid_of[clerk-sync-auth]}" != "${uid_of[clerk-sync-consumer@users]}" ] &&
  [ "${uid_of[clerk-sync-auth]}" != "${uid_of[clerk-sync-receiver]}" ] || fail "clerk-sync-auth shares a uid"
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
now_s=$(date +%s)
jwt_head=$(printf '{"alg":"RS256","typ":"JWT"}' | b64url)
jwt_body=$(printf '{"sub":"%s","sid":"sess_boot_%s","iat":%s,"nbf":%s,"exp":%s}' \
  "$fixture_user" "$$" $((now_s - 5)) $((now_s - 5)) $((now_s + 300)) | b64url)
jwt_sig=$(printf '%s.%s' "$jwt_head" "$jwt_body" | openssl dgst -sha256 -sign "$workdir/jwt.key" -binary | b64url)
auth_headers=$(curl -sS -o /dev/null -D - --max-time 10 -H "Authorization: Bearer $jwt_head.$jwt_body.$jwt_sig" \
  "http://127.0.0.1:$auth_port/auth" | tr -d '\r')
grep -q '^HTTP/1.1 200' <<<"$auth_headers" || { echo "$auth_headers" >&2; fail "auth did not answer 200 for a valid token"; }
grep -qi "^x-clerk-user-id: $fixture_user\$" <<<"$auth_headers" || fail "auth did not name the user"
grep -qi '^x-clerk-role: ' <<<"$auth_headers" || fail "auth gave no role (the users table unread?)"
code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 10 -H "Authorization: Bearer $jwt_head.$jwt_body.x" \
  "http://127.0.0.1:$auth_port/auth")
[ "$code" = 401 ] || fail "auth answered $code for a bad signature"
units+=(clerk-sync-auth)
say "clerk-sync-auth: 200 with the synced role for a valid token, 401 for a forged one, under its own uid"

# --- auth (re)starts while no consumer runs ------------------------------------------
# SQLite reads a WAL database only with its -wal and -shm files, which the
# auth service may not create: the consumers must leave them when they stop.
consumers=(clerk-sync-consumer@users clerk-sync-consumer@balances clerk-sync-consumer@referrals
           clerk-sync-consumer@sessions)
# Auth first, so that the last consumer to stop is the last process with the file open.
box systemctl stop clerk-sync-auth
box systemctl stop "${consumers[@]}"
box systemctl start clerk-sync-auth ||
  { box journalctl -u clerk-sync-auth --no-pager -o cat | tail -n 5 >&2 || true; fail "auth did not start with the consumers stopped"; }
code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 10 -H "Authorization: Bearer $jwt_head.$jwt_body.$jwt_sig" \
  "http://127.0.0.1:$auth_port/auth")
[ "$code" = 200 ] || fail "auth answered $code for a valid token with the consumers stopped"
say "clerk-sync-auth: restarted with every consumer stopped, 200 from the last committed state"

# --- one instance, a comma list of projections ------------------------------------
# systemd escapes the comma in a unit name; the unit must hand the consumer
# the unescaped list (%I), which it would otherwise refuse (exit 2). Started in
# one job with auth, as at boot, auth waits for it to be ready (the consumer
# template's Before=), as it would for consumer@users: auth's process starts
# after the consumer's READY=1, when the database has been created and migrated.
multi='clerk-sync-consumer@users\x2csessions.service'
box systemctl stop clerk-sync-auth
box systemctl start "$multi" clerk-sync-auth ||
  { box journalctl -u "$multi" --no-pager -o cat | tail -n 5 >&2 || true; fail "$multi or auth did not start"; }
argv=$(box cat "/proc/$(mainpid "$multi")/cmdline" | tr '\0' ' ')
[[ "$argv" == *"--projection users,sessions "* ]] || fail "$multi runs '$argv', not --projection users,sessions"
multi_ready=$(show "$multi" ActiveEnterTimestampMonotonic)
auth_exec=$(show clerk-sync-auth ExecMainStartTimestampMonotonic)
[[ "$multi_ready" =~ ^[1-9][0-9]*$ && "$auth_exec" =~ ^[1-9][0-9]*$ ]] ||
  fail "no start times: $multi ready at '$multi_ready', auth started at '$auth_exec'"
((auth_exec >= multi_ready)) ||
  fail "auth started $(((multi_ready - auth_exec) / 1000)) ms before $multi was ready"
box systemctl stop "$multi"
say "$multi: started and ready, running --projection users,sessions; auth started $(((auth_exec - multi_ready) / 1000)) ms after it was ready"
box systemctl start "${consumers[@]}" || fail "the consumers did not start again"

# --- auth from a JWKS, through the README's drop-in ---------------------------------
modulus=$(openssl pkey -in "$workdir/jwt.key" -pubout | openssl rsa -pubin -noout -modulus | sed 's/^Modulus=//' |
  xxd -r -p | b64url)
printf '{"keys":[{"kty":"RSA","use":"sig","alg":"RS256","kid":"ins_boot","n":"%s","e":"AQAB"}]}' "$modulus" |
  box sh -c 'cat >/etc/clerk-sync/clerk-jwks.json'
box mkdir -p /etc/systemd/system/clerk-sync-auth.service.d
# The README's drop-in, as written there: the ini block that names CLERK_JWKS_FILE.
dropin=$(awk '/^```ini$/ { block = ""; inside = 1; next } inside && /^```$/ { inside = 0; if (block ~ /CLERK_JWKS_FILE/) printf "%s", block; next }
  inside { block = block $0 "\n" }' "$repo/README.md")
[ -n "$dropin" ] || fail "no JWKS drop-in in the README"
box sh -c 'cat >/etc/systemd/system/clerk-sync-auth.service.d/jwks.conf' <<<"$dropin"
box systemctl daemon-reload
box systemctl restart clerk-sync-auth ||
  { box journalctl -u clerk-sync-auth --no-pager -o cat | tail -n 5 >&2 || true; fail "auth did not start from the JWKS drop-in"; }
kid_head=$(printf '{"alg":"RS256","typ":"JWT","kid":"ins_boot"}' | b64url)
kid_sig=$(printf '%s.%s' "$kid_head" "$jwt_body" | openssl dgst -sha256 -sign "$workdir/jwt.key" -binary | b64url)
code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 10 -H "Authorization: Bearer $kid_head.$jwt_body.$kid_sig" \
  "http://127.0.0.1:$auth_port/auth")
[ "$code" = 200 ] || fail "auth answered $code for a valid token with the JWKS drop-in"
box rm -r /etc/systemd/system/clerk-sync-auth.service.d   # the operator's file: a purge would keep it
box systemctl daemon-reload
box systemctl restart clerk-sync-auth || fail "auth did not start again from the PEM key"
say "clerk-sync-auth: started from the README's JWKS drop-in, 200 for a token whose kid names the key"

# --- upgrade: a newer package restarts what runs ------------------------------------
# The same binaries under a higher version, as the next scripts/package build
# would be: apt must install it (not "already the newest version") and the
# postinst restart every running unit on the new binaries.
running=("${units[@]}")   # auth joined them above
declare -A old_pid
for u in "${running[@]}"; do old_pid[$u]=$(mainpid "$u"); done
old_version=$(box dpkg-query -W -f='${Version}' clerk-sync)
# scripts/package's versions rise with each commit (or build, when dirty).
[[ "$old_version" =~ ^[0-9.]+\+git[0-9]+\.[0-9]{14}\.[0-9a-f]{8}(\.dirty)?$ ]] ||
  fail "package version $old_version is not <project>+git<commits>.<time>.<commit>"
# The operator's edits (the settings above, and a line of their own) and a
# next package whose example environment differs, wherever it ships one: an
# upgrade without a terminal must neither stop at a conffile prompt nor
# touch the operator's file.
edit="# a line of the operator, boot test $$"
box sh -c "echo '$edit' >>$envfile"
rm -rf "$workdir/next"
dpkg-deb -R "$deb" "$workdir/next"
sed -i 's/^Version: .*/&.1/' "$workdir/next/DEBIAN/control"
examples=$(find "$workdir/next" -path "$workdir/next/DEBIAN" -prune -o -type f -name 'clerk-sync.env*' -print)
[ -n "$examples" ] || fail "the package ships no example environment"
while read -r f; do echo '# a setting new in the next version' >>"$f"; done <<<"$examples"
(cd "$workdir/next" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) \
  >"$workdir/next/DEBIAN/md5sums"
# gzip -1, not xz: this package never leaves the run, and xz took 2 s of it.
fakeroot dpkg-deb --root-owner-group -Zgzip -z1 --build "$workdir/next" "$workdir/next.deb" >/dev/null
box sh -c 'cat >/root/clerk-sync-next.deb' <"$workdir/next.deb"
box sh -c 'cd /root && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ./clerk-sync-next.deb' \
  </dev/null >"$workdir/upgrade.log" 2>&1 ||
  { tail -n 30 "$workdir/upgrade.log" >&2; fail "apt-get install of the next version failed (stdin not a terminal)"; }
[ "$(box dpkg-query -W -f='${Version} ${Status}' clerk-sync)" = "$old_version.1 install ok installed" ] ||
  { tail -n 30 "$workdir/upgrade.log" >&2; fail "the upgrade did not leave $old_version.1 installed"; }
box grep -qxF "$edit" "$envfile" || fail "the upgrade lost the operator's line in $envfile"
box grep -qxF "KAFKA_BROKERS=$brokers" "$envfile" || fail "the upgrade lost the operator's KAFKA_BROKERS"
if box grep -q 'new in the next version' "$envfile"; then fail "the upgrade changed $envfile"; fi
for u in "${running[@]}"; do
  [ "$(box systemctl is-active "$u" || true)" = active ] || fail "$u is not active after the upgrade"
  [ "$(mainpid "$u")" != "${old_pid[$u]}" ] || fail "$u was not restarted by the upgrade"
done
# The consumers first (each applies new migrations before READY=1), then the
# receiver and auth (which reads the database): neither left 'inactive'
# before the last consumer was active again.
# Fails unless the receiver and auth left 'inactive' after the last consumer
# became active: $1 names the step.
started_after_consumers() {
  local step=$1 last=0 u t
  for u in "${consumers[@]}"; do
    t=$(show "$u" ActiveEnterTimestampMonotonic)
    if ((t > last)); then last=$t; fi
  done
  for u in clerk-sync-receiver clerk-sync-auth; do
    t=$(show "$u" InactiveExitTimestampMonotonic)
    ((t > last)) || fail "$step started $u ($t µs) before the last consumer was ready ($last µs)"
  done
}
started_after_consumers "the upgrade"
say "upgrade to $old_version.1 (a new example, stdin not a terminal): installed, $envfile kept, ${#running[@]} running units restarted on it, the consumers first"

# --- an upgrade on which a consumer does not start: said, auth left as it was ---------
# (the postinst's try-restart said nothing, and restarted auth on a schema
# no consumer had migrated.) A drop-in makes the users consumer fail to start.
auth_pid=$(mainpid clerk-sync-auth)
receiver_pid=$(mainpid clerk-sync-receiver)
box sh -c 'mkdir -p /run/systemd/system/clerk-sync-consumer@users.service.d &&
  printf "[Service]\nExecStartPre=/bin/false\n" >/run/systemd/system/clerk-sync-consumer@users.service.d/fail.conf'
box systemctl daemon-reload
sed -i 's/^Version: .*/&.1/' "$workdir/next/DEBIAN/control"
fakeroot dpkg-deb --root-owner-group -Zgzip -z1 --build "$workdir/next" "$workdir/next2.deb" >/dev/null
box sh -c 'cat >/root/clerk-sync-next2.deb' <"$workdir/next2.deb"
box sh -c 'cd /root && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ./clerk-sync-next2.deb' \
  </dev/null >"$workdir/upgrade2.log" 2>&1 ||
  { tail -n 30 "$workdir/upgrade2.log" >&2; fail "apt-get install failed when a consumer could not start (the package stays configured)"; }
grep -q "clerk-sync: 'systemctl try-restart clerk-sync-consumer@\*.service' failed" "$workdir/upgrade2.log" ||
  { tail -n 30 "$workdir/upgrade2.log" >&2; fail "the upgrade did not say that a consumer failed to start"; }
grep -q "clerk-sync: clerk-sync-auth.service left as it was" "$workdir/upgrade2.log" ||
  { tail -n 30 "$workdir/upgrade2.log" >&2; fail "the upgrade did not say that auth was left as it was"; }
[ "$(mainpid clerk-sync-auth)" = "$auth_pid" ] || fail "auth was restarted although a consumer did not start"
[ "$(mainpid clerk-sync-receiver)" != "$receiver_pid" ] || fail "the receiver was not restarted by the upgrade"
box rm -r /run/systemd/system/clerk-sync-consumer@users.service.d
box systemctl daemon-reload
box systemctl reset-failed clerk-sync-consumer@users.service 2>/dev/null || true
box systemctl start clerk-sync-consumer@users.service || fail "the users consumer did not start once mended"
box systemctl restart clerk-sync-auth.service || fail "auth did not restart once the consumers ran"
say "an upgrade on which a consumer fails to start: apt says so, auth keeps its process, the receiver restarted"

# --- kill -9 restarts the main process ------------------------------------------
restarted() {  # unit old-pid old-restarts timeout-s
  local _
  for _ in $(seq 1 $(($4 * 2))); do
    local p n
    p=$(show "$1" MainPID); n=$(show "$1" NRestarts)
    if [ "$p" != 0 ] && [ "$p" != "$2" ] && [ "$n" -gt "$3" ] && [ "$(box systemctl is-active "$1")" = active ]; then
      return 0
    fi
    sleep 0.5
  done
  return 1
}
for u in clerk-sync-receiver clerk-sync-consumer@balances; do
  pid=$(mainpid "$u"); n=$(show "$u" NRestarts)
  box kill -KILL "$pid"
  restarted "$u" "$pid" "$n" 120 || fail "$u was not restarted after kill -9"
  say "$u: kill -9 of $pid, restarted as $(show "$u" MainPID)"
done

# --- SIGSTOP: the watchdog restarts it ------------------------------------------
declare -A stopped_pid stopped_n
watched=(clerk-sync-receiver clerk-sync-consumer@sessions)
for u in "${watched[@]}"; do
  stopped_pid[$u]=$(mainpid "$u"); stopped_n[$u]=$(show "$u" NRestarts)
  box kill -STOP "${stopped_pid[$u]}"
done
t_stop=$(now)
for u in "${watched[@]}"; do
  # WatchdogSec, then SIGABRT, which a stopped process cannot act on, then
  # SIGKILL after TimeoutAbortSec, then RestartSec: about 65 s and 95 s.
  restarted "$u" "${stopped_pid[$u]}" "${stopped_n[$u]}" 300 || fail "$u was not restarted after SIGSTOP"
  box journalctl -u "$u" --no-pager -o cat >"$workdir/unit.journal"
  grep -q 'Watchdog timeout' "$workdir/unit.journal" ||
    { tail -n 40 "$workdir/unit.journal" >&2; fail "$u: no watchdog timeout in the journal"; }
  say "$u: SIGSTOP, watchdog restart after $(elapsed "$t_stop" "$(now)") s"
done

# --- the database file deleted under the consumers: exit 6, held; the README's recovery -------
# A consumer whose path no longer names the file it opened folds its -wal
# into that file, writes db_failed (err) and exits 6, which the unit's
# RestartPreventExitStatus holds: restarted onto a new file while another
# process still wrote the old one, it would share that one's -wal and -shm.
# Then the README's recovery: stop every unit on the file, remove the -wal
# and -shm, start them; the new file is rebuilt from the log, row for row
# the file before (a copy taken with SQLite's backup, compared by ctl).
db=/var/lib/clerk-sync/clerk-sync.db
declare -A consumed_before restarts_before
for p in users balances referrals sessions; do
  consumed_before[$p]=$(sql "SELECT coalesce(sum(next_offset), 0) FROM kafka_offsets WHERE projection = '$p' AND topic = '$topic'")
  restarts_before[$p]=$(show "clerk-sync-consumer@$p" NRestarts)
done
box sqlite3 -readonly "$db" ".backup /root/before-rm.db" || fail "no backup of the database before the rm"
t_rm=$(now)
box rm "$db"
for p in users balances referrals sessions; do
  u=clerk-sync-consumer@$p
  for _ in $(seq 1 60); do [ "$(show "$u" ActiveState)" = failed ] && break; sleep 0.5; done
  [ "$(show "$u" ActiveState)" = failed ] || fail "$u is $(show "$u" ActiveState) 30 s after its database was deleted"
done
failed_after=$(elapsed "$t_rm" "$(now)")
for p in users balances referrals sessions; do
  u=clerk-sync-consumer@$p
  [ "$(show "$u" ExecMainStatus)" = 6 ] || fail "$u exited $(show "$u" ExecMainStatus), not 6"
  # journald reads a unit's output apart from systemd's noticing its exit.
  for _ in $(seq 1 20); do
    box journalctl -u "$u" -p err --no-pager -o cat | grep -q "msg=db_failed .*projection=$p" && break
    sleep 0.5
  done
  box journalctl -u "$u" -p err --no-pager -o cat | grep -q "msg=db_failed .*projection=$p" ||
    fail "$u: no db_failed error line for projection $p"
done
sleep 7  # past RestartSec=5s: a restart systemd had scheduled would have come
for p in users balances referrals sessions; do
  u=clerk-sync-consumer@$p
  [ "$(show "$u" ActiveState)" = failed ] && [ "$(show "$u" NRestarts)" = "${restarts_before[$p]}" ] ||
    fail "$u was restarted after exit 6 ($(show "$u" ActiveState), NRestarts $(show "$u" NRestarts))"
done
code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 10 -H "Authorization: Bearer $jwt_head.$jwt_body.$jwt_sig" \
  "http://127.0.0.1:$auth_port/auth")
[ "$code" = 503 ] || fail "auth answered $code for a valid token with its database deleted, not 503"
box systemctl stop clerk-sync-auth
# An upgrade meanwhile (the postinst's configure, with the consumers
# enabled) leaves them for the operator, and says so.
box systemctl enable "${consumers[@]}" >/dev/null 2>&1 || fail "systemctl enable failed"
box /var/lib/dpkg/info/clerk-sync.postinst configure "$(box dpkg-query -W -f='${Version}' clerk-sync)" \
  >"$workdir/postinst.out" 2>&1 || { cat "$workdir/postinst.out" >&2; fail "the postinst's configure failed"; }
for p in users balances referrals sessions; do
  u=clerk-sync-consumer@$p
  [ "$(show "$u" ActiveState)" = failed ] && [ "$(show "$u" NRestarts)" = "${restarts_before[$p]}" ] ||
    fail "the postinst started $u after its exit 6 ($(show "$u" ActiveState))"
  grep -qF "not starting $u.service: it stopped with exit 6" "$workdir/postinst.out" ||
    { cat "$workdir/postinst.out" >&2; fail "the postinst did not say why it left $u stopped"; }
done
box systemctl reset-failed "${consumers[@]}"
emptied=$(box journalctl -u 'clerk-sync-consumer@*' --no-pager -o cat --since "@${t_rm%.*}" |
  grep -c 'msg=db_failed .*wal_emptied=true' || true)
box rm -f "$db-wal" "$db-shm"
box systemctl start "${consumers[@]}" clerk-sync-auth ||
  { box journalctl -u 'clerk-sync-consumer@*' --no-pager -o cat | tail -n 5 >&2 || true; fail "the consumers did not start on a new file"; }
for p in users balances referrals sessions; do wait_consumed "$p" "${consumed_before[$p]}"; done
box clerk-sync-ctl compare --projection all /root/before-rm.db "$db" >"$workdir/compare.out" 2>&1 ||
  { cat "$workdir/compare.out" >&2; fail "the tables rebuilt from the log differ from those before the rm"; }
box rm /root/before-rm.db
code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 10 -H "Authorization: Bearer $jwt_head.$jwt_body.$jwt_sig" \
  "http://127.0.0.1:$auth_port/auth")
[ "$code" = 200 ] || fail "auth answered $code for a valid token on the rebuilt database"
say "database deleted: the 4 consumers failed with exit 6 within ${failed_after} s, each with a db_failed error ($emptied of 4 with wal_emptied=true), none restarted, by systemd or by the postinst; auth 503; the README's recovery rebuilt every table from the log, row for row, auth 200 again"

# --- the journal: logfmt lines with the svix-id, never the secret ----------------
box journalctl -u clerk-sync-receiver --no-pager -o cat >"$workdir/receiver.journal"
lines=$(grep -E "svix_id=$msg( |$)" "$workdir/receiver.journal" || true)
grep -qE '^(ts|time)=|level=' <<<"$lines" ||
  fail "the receiver's journal has no logfmt line with svix_id=$msg"
secret_key=${secret#whsec_}
for u in "${units[@]}"; do
  box journalctl -u "$u" --no-pager -o cat >"$workdir/unit.journal"
  if grep -qF -e "$secret_key" "$workdir/unit.journal"; then fail "the journal of $u holds the webhook secret"; fi
done
box journalctl --no-pager -o cat >"$workdir/all.journal"
if grep -qF -e "$secret_key" "$workdir/all.journal"; then fail "the box's journal holds the webhook secret"; fi
# Auth runs without CLERK_AUTHORIZED_PARTIES here: a warning at each start,
# beside its info lines (listening, each check let in).
warnings=$(box journalctl -u clerk-sync-auth -p warning --no-pager -o cat)
grep -qE '^ts=[^ ]+ level=warn msg=no_authorized_parties ' <<<"$warnings" ||
  { echo "$warnings" | tail -n 5 >&2; fail "journalctl -p warning does not show auth's no_authorized_parties warning"; }
if grep -q 'level=info' <<<"$warnings"; then
  echo "$warnings" | head -n 5 >&2; fail "journalctl -p warning shows auth's info lines"
fi
say "journal: logfmt lines with svix_id=$msg; the secret in none; -p warning shows warnings and no info line"

# --- systemd-analyze security inside ------------------------------------------------
for u in "${units[@]}"; do
  out=$(box systemd-analyze security --no-pager "$u.service" 2>&1)
  level=$(sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p' <<<"$out")
  [ -n "$level" ] || { echo "$out" >&2; fail "no exposure level for $u"; }
  awk -v l="$level" 'BEGIN { exit !(l <= 2.0) }' || fail "$u: exposure $level, above 2.0"
  say "$u: systemd-analyze security $level"
done

# --- stop: Result=success -------------------------------------------------------
box systemctl enable "${units[@]}" >/dev/null 2>&1 || fail "systemctl enable failed"
box systemctl stop "${units[@]}"
for u in "${units[@]}"; do
  [ "$(show "$u" Result)" = success ] || fail "$u stopped with Result=$(show "$u" Result)"
  [ "$(box systemctl is-active "$u" || true)" = inactive ] || fail "$u is still active after stop"
done
say "stop: Result=success for all ${#units[@]}"

# --- remove, then reinstall: what the operator enabled runs again -----------------
# A remove stops every unit and keeps the enable links and the environment
# file; the reinstall's postinst starts the enabled units (consumers first).
box systemctl start "${units[@]}"
box env DEBIAN_FRONTEND=noninteractive apt-get remove -y -q clerk-sync </dev/null >"$workdir/remove.log" 2>&1 ||
  { cat "$workdir/remove.log" >&2; fail "apt-get remove failed"; }
[ "$(box dpkg-query -W -f='${Status}' clerk-sync)" = "deinstall ok config-files" ] ||
  fail "after remove clerk-sync is '$(box dpkg-query -W -f='${Status}' clerk-sync)', not 'deinstall ok config-files'"
for u in "${units[@]}"; do
  [ "$(box systemctl is-active "$u" || true)" = inactive ] || fail "$u is still running after remove"
done
box grep -qxF "$edit" "$envfile" || fail "remove did not keep the operator's $envfile"
box sh -c 'cd /root && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ./clerk-sync-next.deb' \
  </dev/null >"$workdir/reinstall.log" 2>&1 || { tail -n 30 "$workdir/reinstall.log" >&2; fail "the reinstall failed"; }
box grep -qxF "$edit" "$envfile" || fail "the reinstall did not keep the operator's $envfile"
for u in "${units[@]}"; do
  [ "$(box systemctl is-active "$u" || true)" = active ] || fail "$u, enabled, was not started by the reinstall"
  mainpid "$u" >/dev/null
done
started_after_consumers "the reinstall"
say "remove, then reinstall: $envfile kept, the ${#units[@]} enabled units started again, the consumers first"

# --- purge: no unit left behind ----------------------------------------------------
box systemctl start "${units[@]}"   # purging a running install must stop it too
box env DEBIAN_FRONTEND=noninteractive apt-get purge -y -q clerk-sync >"$workdir/purge.log" 2>&1 ||
  { cat "$workdir/purge.log" >&2; fail "apt-get purge failed"; }
left=$(box sh -c 'systemctl list-units --all --no-legend --plain "clerk-sync*"; systemctl list-unit-files --no-legend "clerk-sync*";
  find /etc/systemd /lib/systemd /usr/lib/systemd -name "clerk-sync*"; pgrep -a clerk-sync' || true)
[ -z "$left" ] || fail "left behind after purge: $left"
if box test -e "$envfile"; then fail "$envfile is left after purge"; fi
say "purge: no clerk-sync unit, link, process or $envfile left"

# --- from a package that shipped the environment file as a conffile ----------------
# Such a package, rebuilt from this one: the file in /etc, listed in
# DEBIAN/conffiles, at a lower version. Upgrading from it must keep the
# operator's file as it is (dpkg then lists it as an obsolete conffile),
# without a prompt; a purge removes it.
rm -rf "$workdir/legacy"
dpkg-deb -R "$deb" "$workdir/legacy"
sed -i 's/^Version: .*/Version: 0~conffile/' "$workdir/legacy/DEBIAN/control"
install -D -m 0644 systemd/clerk-sync.env.example "$workdir/legacy$envfile"
echo "$envfile" >"$workdir/legacy/DEBIAN/conffiles"
(cd "$workdir/legacy" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) \
  >"$workdir/legacy/DEBIAN/md5sums"
fakeroot dpkg-deb --root-owner-group -Zgzip -z1 --build "$workdir/legacy" "$workdir/legacy.deb" >/dev/null
box sh -c 'cat >/root/clerk-sync-legacy.deb' <"$workdir/legacy.deb"
box sh -c 'cd /root && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ./clerk-sync-legacy.deb' \
  </dev/null >"$workdir/legacy.log" 2>&1 || { tail -n 30 "$workdir/legacy.log" >&2; fail "apt-get install of the conffile package failed"; }
conffiles=$(box dpkg-query -W -f='${Conffiles}' clerk-sync)
grep -qE "^ $envfile [0-9a-f]{32}\$" <<<"$conffiles" || fail "the rebuilt old package has no conffile $envfile: $conffiles"
box sh -c "echo '$edit' >>$envfile"
box sh -c "cd /root && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ./$debname" \
  </dev/null >"$workdir/legacy.log" 2>&1 ||
  { tail -n 30 "$workdir/legacy.log" >&2; fail "the upgrade from the conffile package failed (stdin not a terminal)"; }
[ "$(box dpkg-query -W -f='${Status}' clerk-sync)" = "install ok installed" ] ||
  fail "the upgrade from the conffile package left it $(box dpkg-query -W -f='${Status}' clerk-sync)"
box grep -qxF "$edit" "$envfile" || fail "the upgrade from the conffile package lost the operator's $envfile"
conffiles=$(box dpkg-query -W -f='${Conffiles}' clerk-sync)
grep -qE "^ $envfile [0-9a-f]{32} obsolete\$" <<<"$conffiles" || fail "$envfile is not an obsolete conffile: $conffiles"
box env DEBIAN_FRONTEND=noninteractive apt-get purge -y -q clerk-sync >"$workdir/purge.log" 2>&1 ||
  { cat "$workdir/purge.log" >&2; fail "apt-get purge after the conffile package failed"; }
if box test -e "$envfile"; then fail "$envfile is left after purging an upgrade from the conffile package"; fi
say "from a package with $envfile as a conffile: upgraded without a prompt, the edited file kept (obsolete conffile), purged"
say "figures: boot ${boot_s} s, start-to-ready ${ready_s} s"
