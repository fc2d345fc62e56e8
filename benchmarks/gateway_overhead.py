"""What the gateway adds on top of the upstream call: latency, throughput and CPU per request.

One run starts every target as its own process on 127.0.0.1, drives each with ``wrk`` (POSTs of
an OpenAI chat request, non-streaming and streaming, at several concurrencies), kills them all,
prints a table and writes it into ``docs/benchmarks.md``:

    direct    the simulated Gemini's OpenAI surface (``standby sim gemini``), no proxy at all
    floor     benchmarks/floor_proxy.py: aiohttp server + one shared ClientSession on uvloop
    standby   ``standby serve`` (one worker), route ``gemini-3.8-flash: [gemini, gemini_backup]``
    standby-2w  the same config under ``standby serve --workers 2`` (two worker processes behind
              one port, breakers and metrics shared); its CPU is the whole process group's
    litellm   the LiteLLM proxy (one worker), same route with a configured fallback

Capture on / off is measured inside the ``standby`` gateway (``capture_ab``): its route
``gemini-3.8-flash`` captures, two more routes with the same backends have ``capture: false``;
short runs against the three rotate, so drift in machine speed cancels, and the two capture-off
routes are an A/A control that shows how far apart identical runs land. One process for both
sides, because two identical gateway processes were measured ~3 % apart (memory layout), as
much as capture costs. ``standby-nocapture`` (a second gateway, capture disabled) is measured
in the cells as before.

    .venv/bin/python benchmarks/gateway_overhead.py            # full run, ~10 minutes
    .venv/bin/python benchmarks/gateway_overhead.py --quick    # smoke run, < 60 s, no litellm

``--tools`` adds a third mode, ``tools``: the request declares five tools with
``tool_choice: "required"``, so the simulated Gemini answers with a function call (whole
answers; direct, floor and standby only), held to the same targets.

``--responses`` adds two more, ``responses`` and ``responses-stream``: the same prompt sent to
standby's ``POST /v1/responses`` (whole and streamed; ``store`` left at its default, true, so each
answer is also kept in the bus's SQLite file). The upstream call is the chat one, so its cells
are held to the chat targets against direct's and floor's chat cells of the same concurrency,
and set beside standby's own chat cells.

Needs ``wrk`` on PATH (Debian: ``apt-get install -y wrk``). Not a test: numbers depend on the
machine and on whatever else runs on it, which the report records.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import itertools
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TOKEN = "sk-standby-bench-0000"  # the gateway key, the LiteLLM master key, the sim's "API key"
MODEL = "gemini-3.8-flash"
PROMPT = "Say hello in one short sentence."
TICK = os.sysconf("SC_CLK_TCK")
NPROC = os.cpu_count() or 1
BEGIN = "<!-- BEGIN gateway_overhead results (generated: edit the script, not this block) -->"
END = "<!-- END gateway_overhead results -->"
TARGETS = ("direct", "floor", "standby", "standby-nocapture", "standby-2w", "litellm")
# --pin: the proxy under test gets CPU 0 to itself; the simulator and wrk share CPU 1, and so
# does standby's capture writer (a child of the gateway, which would inherit CPU 0; in
# production it runs on another core than the gateway's event loop, when there is one).
PIN_LAYOUT = {"proxy": "0", "sim": "1", "wrk": "1", "writer": "1"}
MODES = ("non-stream", "stream")
TOOLS_MODE = "tools"  # --tools: a whole answer that calls one of the five tools declared
TOOLS_TARGETS = ("direct", "floor", "standby")
# --responses: POST /v1/responses whole and streamed (standby only), beside the chat mode whose
# upstream call it makes.
RESPONSES_MODES = {"responses": "non-stream", "responses-stream": "stream"}
RESPONSES_PATH = "/v1/responses"
# capture_ab's arms: the route each one calls on the ``standby`` gateway (the two off routes
# are the A/A control).
CAPTURE_ARMS = {"on": MODEL, "off": "nocapture", "off-again": "nocapture-2"}
SETTLE_S = 0.3  # before each capture_ab run: longer than capture's flush window (0.2 s)

STRING = {"type": "string"}
INTEGER = {"type": "integer", "minimum": 1}
# The tools case's five tools, declared with every request (about 1.3 kB of the body):
# (name, description, properties, required).
DECLARED: list[tuple[str, str, dict[str, object], list[str]]] = [
    (
        "get_weather",
        "The current weather in a city.",
        {
            "city": {"type": "string", "description": "City name, e.g. Paris"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        ["city"],
    ),
    ("get_time", "The local time in an IANA time zone.", {"zone": STRING}, ["zone"]),
    (
        "search_web",
        "Search the web and return the top results.",
        {"query": STRING, "max_results": {"type": "integer", "minimum": 1, "maximum": 10}},
        ["query"],
    ),
    (
        "send_email",
        "Send an email on the user's behalf.",
        {"to": {"type": "string", "format": "email"}, "subject": STRING, "body": STRING},
        ["to", "subject", "body"],
    ),
    (
        "create_event",
        "Put an event in the user's calendar.",
        {
            "title": STRING,
            "start": {"type": "string", "format": "date-time"},
            "duration_minutes": INTEGER,
        },
        ["title", "start"],
    ),
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }
    for name, description, properties, required in DECLARED
]
TOOL_NAMES = frozenset(name for name, *_ in DECLARED)

# wrk's Lua side: one request body; the response hook counts non-2xx answers and 2xx answers
# whose body is not a finished answer (no "choices" / no final "data: [DONE]" / for the tools
# case no "tool_calls" with "arguments"); done() prints one JSON line that the script parses.
WRK_LUA = """\
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"
local expect = {{{expect}}}
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function init(args) non2xx = 0; bad = 0 end
function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    return
  end
  for _, text in ipairs(expect) do
    if not string.find(body, text, 1, true) then bad = bad + 1; return end
  end
end
function done(summary, latency, requests)
  local n, b = 0, 0
  for _, t in ipairs(threads) do n = n + t:get("non2xx"); b = b + t:get("bad") end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"non2xx":%d,"bad":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, n, b, e.connect, e.read, e.write, e.timeout))
end
"""


# ----------------------------------------------------------------------------------------------
# processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def proc_stats() -> Iterator[tuple[int, list[bytes]]]:
    """(pid, the fields of /proc/PID/stat after the command name) of every live process:
    [0] state, [1] parent, [2] process group, [11..14] user / system / children's u / s time."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        yield int(entry.name), raw[raw.rindex(b")") + 2 :].split()


def group_cpu_s(pgid: int) -> float:
    """User + system CPU seconds of every live process in process group ``pgid`` (and of its
    reaped children), from /proc."""
    total = sum(
        sum(int(x) for x in fields[11:15]) for _, fields in proc_stats() if int(fields[2]) == pgid
    )
    return total / TICK


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid``, from /proc."""
    return [child for child, fields in proc_stats() if int(fields[1]) == pid]


def pin_process(pid: int, cpus: str) -> None:
    """Move every thread of ``pid`` to ``cpus`` (threads it starts later inherit it)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(tid), {int(c) for c in cpus.split(",")})


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        parts = f.readline().split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in parts[1:9])
    return (user + nice + system + irq + softirq + steal) / TICK


def children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


@dataclass
class Proc:
    """A process the script started, in its own process group (so it and its workers end)."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pgid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text[-lines:])

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=8)
        with contextlib.suppress(ProcessLookupError):  # workers left behind, if any
            os.killpg(self.pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)


class Procs:
    """Every process this run started; all are stopped on exit, error or Ctrl-C."""

    def __init__(self, workdir: Path, pin: bool = False) -> None:
        self.workdir = workdir
        self.pin = pin
        self.all: list[Proc] = []

    def start(
        self, name: str, argv: Sequence[str], env: dict[str, str] | None = None, role: str = "proxy"
    ) -> Proc:
        log = self.workdir / f"{name}.log"
        if self.pin:
            argv = ["taskset", "-c", PIN_LAYOUT[role], *argv]
        with open(log, "wb") as out:
            popen = subprocess.Popen(
                list(argv),
                cwd=self.workdir,
                env={**os.environ, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = Proc(name, popen, log)
        self.all.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.all):
            proc.stop()
        self.all.clear()


def http(
    method: str, url: str, body: bytes | None = None, timeout: float = 10.0
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method)
    req.add_header("Authorization", f"Bearer {TOKEN}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_ready(proc: Proc, url: str, deadline_s: float) -> str | None:
    """Poll ``url`` until it answers 200; ``None`` when ready, else why not."""
    end = time.monotonic() + deadline_s
    last = "no answer"
    while time.monotonic() < end:
        if not proc.alive():
            return f"exited with status {proc.popen.returncode}: {proc.log_tail()}"
        try:
            status, _ = http("GET", url, timeout=2)
        except (OSError, urllib.error.URLError) as e:
            last = str(e)
        else:
            if status == 200:
                return None
            last = f"HTTP {status}"
        time.sleep(0.25)
    return f"not ready after {deadline_s:.0f} s ({last}): {proc.log_tail()}"


# ----------------------------------------------------------------------------------------------
# targets


def request_body(mode: str, model: str = MODEL) -> bytes:
    if mode in RESPONSES_MODES:
        stream = mode == "responses-stream"
        ask = {"model": model, "input": PROMPT, "stream": stream}
        return json.dumps(ask, separators=(",", ":")).encode()
    body: dict[str, object] = {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "stream": mode == "stream",
    }
    if mode == TOOLS_MODE:
        body |= {"tools": TOOLS, "tool_choice": "required"}
    return json.dumps(body, separators=(",", ":")).encode()


def answered(body: bytes, mode: str) -> bool:
    """A finished answer of the mode's kind: text, a stream ending ``[DONE]``, or a call of a
    declared tool with JSON arguments; for the Responses modes a completed response with text,
    or a stream ending in ``response.completed``."""
    if mode == "responses-stream":
        return b"event: response.completed" in body and b"response.output_text.delta" in body
    if mode == "responses":
        try:
            answer = json.loads(body)
            return answer["status"] == "completed" and bool(
                answer["output"][0]["content"][0]["text"]
            )
        except (ValueError, KeyError, IndexError, TypeError):
            return False
    if mode == "stream":
        return body.rstrip().endswith(b"data: [DONE]") and b'"content"' in body
    try:
        message = json.loads(body)["choices"][0]["message"]
        if mode != TOOLS_MODE:
            return bool(message["content"])
        calls = message["tool_calls"]
        return bool(calls) and all(
            c["function"]["name"] in TOOL_NAMES
            and isinstance(json.loads(c["function"]["arguments"]), dict)
            for c in calls
        )
    except (ValueError, KeyError, IndexError, TypeError):
        return False


def url_for(url: str, mode: str) -> str:
    """The target's URL for ``mode``: its chat URL, or standby's Responses endpoint."""
    if mode in RESPONSES_MODES:
        return url.replace("/v1/chat/completions", RESPONSES_PATH)
    return url


def check_answer(url: str, mode: str) -> str | None:
    """One request by hand before the load: ``None`` when the answer is right, else why."""
    url = url_for(url, mode)
    try:
        status, body = http("POST", url, request_body(mode), timeout=30)
    except (OSError, urllib.error.URLError) as e:
        return f"request failed: {e}"
    if status != 200:
        return f"HTTP {status}: {body[:200]!r}"
    return None if answered(body, mode) else f"unexpected {mode} answer: {body[:200]!r}"


@dataclass
class Target:
    name: str
    url: str = ""
    proc: Proc | None = None  # the proxy process whose CPU is counted (None for direct)
    unavailable: str | None = None


def standby_yaml(port: int, sim: int, capture: str) -> str:
    off_routes = "".join(
        f"  {alias}: {{backends: [gemini, gemini_backup], capture: false}}\n"
        for arm, alias in CAPTURE_ARMS.items()
        if arm != "on"
    )
    return f"""\
# generated by benchmarks/gateway_overhead.py
server:
  host: 127.0.0.1
  port: {port}
  api_keys: ["{TOKEN}"]
backends:
  gemini:
    type: gemini
    model: {MODEL}
    api_key: sim-key
    base_url: http://127.0.0.1:{sim}
  gemini_backup:          # fallback: same simulator, a model name that always answers
    type: gemini
    model: ok
    api_key: sim-key
    base_url: http://127.0.0.1:{sim}
routes:
  {MODEL}: [gemini, gemini_backup]
{off_routes}capture: {capture}
"""


def litellm_yaml(sim: int) -> str:
    return f"""\
# generated by benchmarks/gateway_overhead.py
model_list:
  - model_name: {MODEL}
    litellm_params:
      model: gemini/{MODEL}
      api_base: http://127.0.0.1:{sim}/v1beta
      api_key: sim-key
  - model_name: {MODEL}-backup
    litellm_params:
      model: gemini/ok
      api_base: http://127.0.0.1:{sim}/v1beta
      api_key: sim-key
router_settings:
  fallbacks: [{{"{MODEL}": ["{MODEL}-backup"]}}]
"""


def executable(name: str) -> str | None:
    here = BIN / name
    return str(here) if here.exists() else shutil.which(name)


def modes_of(name: str, modes: Sequence[str]) -> list[str]:
    """The modes a target is measured in (the tools case: direct, floor and standby; the
    Responses modes: standby)."""
    return [
        m
        for m in modes
        if (m != TOOLS_MODE or name in TOOLS_TARGETS)
        and (m not in RESPONSES_MODES or name == "standby")
    ]


def start_targets(
    procs: Procs, names: Sequence[str], modes: Sequence[str]
) -> tuple[Proc, dict[str, Target]]:
    """Start the simulator and every proxy at once (start-up overlaps), then wait for each
    and check one answer of each mode it is measured in."""
    work = procs.workdir
    standby = executable("standby")
    if standby is None:
        raise SystemExit("error: the `standby` command is not installed (pip install -e .)")
    sim_port = free_port()
    sim = procs.start("sim", [standby, "sim", "gemini", "--port", str(sim_port)], role="sim")
    upstream = f"http://127.0.0.1:{sim_port}/v1beta/openai/chat/completions"
    targets: dict[str, Target] = {}
    waits: list[tuple[Target, Proc, str, float]] = []
    for name in names:
        target = targets[name] = Target(name)
        port = free_port()
        if name == "direct":
            target.url = upstream
            continue
        target.url = f"http://127.0.0.1:{port}/v1/chat/completions"
        if name == "floor":
            argv = [sys.executable, str(REPO / "benchmarks" / "floor_proxy.py")]
            argv += ["--port", str(port), "--upstream", upstream]
            proc = procs.start("floor", argv)
            waits.append((target, proc, f"http://127.0.0.1:{port}/healthz", 30))
        elif name in ("standby", "standby-nocapture", "standby-2w"):
            capture = (
                "{enabled: false}"
                if name == "standby-nocapture"
                else f'{{enabled: true, bus: "sqlite:///{work}/events.db"}}'
            )
            config = f"{name}.yaml"
            (work / config).write_text(standby_yaml(port, sim_port, capture))
            workers = ["--workers", "2"] if name == "standby-2w" else []
            proc = procs.start(name, [standby, "serve", "--config", config, *workers])
            waits.append((target, proc, f"http://127.0.0.1:{port}/readyz", 90))
        elif name == "litellm":
            exe = executable("litellm")
            if exe is None:
                target.unavailable = "the `litellm` command is not installed"
                continue
            (work / "litellm.yaml").write_text(litellm_yaml(sim_port))
            argv = [exe, "--config", "litellm.yaml", "--host", "127.0.0.1", "--port", str(port)]
            env = {
                "LITELLM_MASTER_KEY": TOKEN,
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "LITELLM_LOG": "ERROR",
            }
            proc = procs.start("litellm", [*argv, "--num_workers", "1"], env)
            waits.append((target, proc, f"http://127.0.0.1:{port}/health/liveliness", 180))
    why = wait_ready(sim, f"http://127.0.0.1:{sim_port}/healthz", 30)
    if why is not None:
        raise SystemExit(f"error: the simulated Gemini did not start: {why}")
    for target, proc, ready_url, deadline in waits:
        started = time.monotonic()
        target.unavailable = wait_ready(proc, ready_url, deadline)
        target.proc = proc
        if target.unavailable is None:
            for mode in modes_of(target.name, modes):
                target.unavailable = check_answer(target.url, mode)
                if target.unavailable is not None:
                    break
        state = "ready" if target.unavailable is None else f"UNAVAILABLE: {target.unavailable}"
        print(f"  {target.name}: {state} ({time.monotonic() - started:.1f} s)", flush=True)
    direct = targets.get("direct")
    if direct is not None:
        for mode in modes_of("direct", modes):
            direct.unavailable = direct.unavailable or check_answer(direct.url, mode)
    return sim, targets


# ----------------------------------------------------------------------------------------------
# measuring


@dataclass
class Cell:
    target: str
    mode: str
    conc: int
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    requests: int = 0
    non2xx: int = 0
    bad: int = 0
    sock_errors: int = 0
    proxy_cpu_ms: float | None = None  # proxy CPU per request
    sim_cpu_ms: float = 0.0  # simulator CPU per request
    wrk_cpu_ms: float = 0.0  # load generator CPU per request
    other_cpu_pct: float = 0.0  # CPU used by processes not in this benchmark, % of all cores
    error: str | None = None


# What a 2xx body must contain to count as answered, per mode (the tools case: a call; its
# finish_reason alone also says "tool_calls", so the call's "arguments" are looked for too).
EXPECT = {
    "non-stream": ['"choices"'],
    "stream": ["data: [DONE]"],
    TOOLS_MODE: ['"tool_calls"', '"arguments"'],
    "responses": ['"status":"completed"', '"output_text"'],
    "responses-stream": ["event: response.completed"],
}


def wrk_script(workdir: Path, mode: str, model: str = MODEL) -> Path:
    path = workdir / f"post-{model}-{mode}.lua"
    body = request_body(mode, model).decode()
    expect = ", ".join(f"[==[{text}]==]" for text in EXPECT[mode])
    path.write_text(WRK_LUA.format(body=body, token=TOKEN, expect=expect))
    return path


def run_wrk(url: str, script: Path, conc: int, seconds: int, pin: bool) -> dict[str, int]:
    argv = ["wrk", "-t1", f"-c{conc}", f"-d{seconds}s", "--timeout", "30s", "-s", str(script)]
    if pin:
        argv = ["taskset", "-c", PIN_LAYOUT["wrk"], *argv]
    done = subprocess.run([*argv, url], capture_output=True, text=True, timeout=seconds + 60)
    for line in done.stdout.splitlines():
        if line.startswith("WRKJSON "):
            parsed: dict[str, int] = json.loads(line[len("WRKJSON ") :])
            return parsed
    raise RuntimeError(f"wrk printed no summary (status {done.returncode}): {done.stderr[-300:]}")


def measure(
    target: Target,
    sim: Proc,
    mode: str,
    conc: int,
    script: Path,
    warmup: int,
    duration: int,
    pin: bool,
) -> Cell:
    cell = Cell(target.name, mode, conc)
    if target.unavailable is not None:
        cell.error = target.unavailable
        return cell
    url = url_for(target.url, mode)
    if warmup > 0:
        run_wrk(url, script, conc, warmup, pin)
    proxy = target.proc
    cpu0 = group_cpu_s(proxy.pgid) if proxy else 0.0
    sim0, wrk0, busy0 = group_cpu_s(sim.pgid), children_cpu_s(), machine_busy_s()
    got = run_wrk(url, script, conc, duration, pin)
    cpu1 = group_cpu_s(proxy.pgid) if proxy else 0.0
    sim1, wrk1, busy1 = group_cpu_s(sim.pgid), children_cpu_s(), machine_busy_s()
    seconds = got["duration_us"] / 1e6
    n = max(got["requests"], 1)
    cell.requests = got["requests"]
    cell.rps = got["requests"] / seconds
    cell.p50_ms = got["p50_us"] / 1000
    cell.p99_ms = got["p99_us"] / 1000
    cell.non2xx = got["non2xx"]
    cell.bad = got["bad"]
    cell.sock_errors = got["connect"] + got["read"] + got["write"] + got["timeout"]
    ours = (cpu1 - cpu0) + (sim1 - sim0) + (wrk1 - wrk0)
    cell.proxy_cpu_ms = (cpu1 - cpu0) * 1000 / n if proxy else None
    cell.sim_cpu_ms = (sim1 - sim0) * 1000 / n
    cell.wrk_cpu_ms = (wrk1 - wrk0) * 1000 / n
    cell.other_cpu_pct = max(0.0, (busy1 - busy0) - ours) / (seconds * NPROC) * 100
    return cell


def capture_ab(
    target: Target,
    mode: str,
    conc: int,
    workdir: Path,
    rounds: int,
    seconds: int,
    pin: bool,
) -> CaptureAB:
    """Capture on / off req/s inside one gateway: ``rounds`` rounds of one short run per arm
    (CAPTURE_ARMS). On this shared 2-core machine throughput drifts by tens of percent within
    a minute; two 10 s cells measured one after the other carry that drift into their ratio,
    short interleaved runs cancel most of it. The rounds take the arms in each of their six
    orders in turn, so over six rounds every arm runs in every position, and after every
    other arm, equally often. Each run starts after SETTLE_S, so the capture writer has
    written the previous run's answers."""
    assert target.proc is not None
    scripts = {arm: wrk_script(workdir, mode, model) for arm, model in CAPTURE_ARMS.items()}
    ab = CaptureAB(rounds, seconds)
    orders = list(itertools.permutations(CAPTURE_ARMS))
    for arm in CAPTURE_ARMS:  # warm every route
        run_wrk(target.url, scripts[arm], conc, 2, pin)
    for i in range(rounds):
        rates = {}
        for arm in orders[i % len(orders)]:
            time.sleep(SETTLE_S)
            cpu0 = group_cpu_s(target.proc.pgid)
            got = run_wrk(target.url, scripts[arm], conc, seconds, pin)
            total = ab.arms.setdefault(arm, ArmTotal())
            total.requests += got["requests"]
            total.seconds += got["duration_us"] / 1e6
            total.cpu_s += group_cpu_s(target.proc.pgid) - cpu0
            rates[arm] = got["requests"] / (got["duration_us"] / 1e6)
        ab.round_ratios.append(rates["on"] / rates["off"])
        ab.control_ratios.append(rates["off-again"] / rates["off"])
    return ab


# ----------------------------------------------------------------------------------------------
# report


@dataclass
class ArmTotal:
    requests: int = 0
    seconds: float = 0.0
    cpu_s: float = 0.0  # the gateway's process group: the gateway and its capture writer

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms(self) -> float:
        return self.cpu_s * 1000 / max(self.requests, 1)


@dataclass
class CaptureAB:
    """Capture on / off from rotating short runs at one (mode, concurrency)."""

    rounds: int
    seconds: int
    arms: dict[str, ArmTotal] = field(default_factory=dict)
    round_ratios: list[float] = field(default_factory=list)  # on / off, per round
    control_ratios: list[float] = field(default_factory=list)  # off-again / off, per round

    @property
    def ratio(self) -> float:
        return self.arms["on"].rps / self.arms["off"].rps

    @property
    def control(self) -> float:
        return self.arms["off-again"].rps / self.arms["off"].rps


@dataclass
class Report:
    cells: list[Cell] = field(default_factory=list)
    capture_ab: dict[tuple[str, int], CaptureAB] = field(default_factory=dict)

    def get(self, target: str, mode: str, conc: int) -> Cell | None:
        for c in self.cells:
            if (c.target, c.mode, c.conc) == (target, mode, conc) and c.error is None:
                return c
        return None


def fmt_ms(x: float) -> str:
    return f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 100 else f"{x:.0f}"


def results_table(report: Report) -> list[str]:
    rows = [
        "| target | mode | conc | req/s | p50 ms | p99 ms | non-2xx | bad body | sock err "
        "| proxy CPU ms/req | sim CPU ms/req | other load % |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for c in report.cells:
        if c.error is not None:
            why = c.error.replace("|", "/").replace("\n", " ")
            rows.append(f"| {c.target} | {c.mode} | {c.conc} | unavailable: {why} |")
            continue
        cpu = "—" if c.proxy_cpu_ms is None else f"{c.proxy_cpu_ms:.2f}"
        rows.append(
            f"| {c.target} | {c.mode} | {c.conc} | {c.rps:,.0f} | {fmt_ms(c.p50_ms)} "
            f"| {fmt_ms(c.p99_ms)} | {c.non2xx} | {c.bad} | {c.sock_errors} | {cpu} "
            f"| {c.sim_cpu_ms:.2f} | {c.other_cpu_pct:.0f} |"
        )
    return rows


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else "**met**" if ok else "**MISSED**"


# capture_ab's verdict needs its A/A control (two identical routes) within this of 1.00:
# further apart, the run's noise is as large as the effect it measures.
CONTROL_TOLERANCE = 0.03


def derived(report: Report, concs: Sequence[int], modes: Sequence[str] = MODES) -> list[str]:
    """Ratios and the issue's targets, per mode. The req/s ratios are what the targets are
    stated in; the CPU-per-request ratios say the same thing without the noise of whatever
    else shares the cores (``floor ms / standby ms`` is the req/s ratio both would reach on
    equal, dedicated CPU)."""
    lines = [
        "| mode | measure | value | target | result |",
        "|---|---|--:|--:|---|",
    ]

    def row(
        mode: str,
        what: str,
        value: str,
        target: str = "",
        ok: bool | None = None,
        result: str | None = None,
    ) -> None:
        result = result or ("" if not target else verdict(ok))
        lines.append(f"| {mode} | {what} | {value} | {target} | {result} |")

    def versus(
        peer: str,
        mode: str,
        concs: Iterable[int],
        fmt: str,
        target: str,
        met: Callable[[float], bool],
    ) -> None:
        """standby / ``peer`` req/s against the target (stated at c=16), and the two's CPU per
        request the other way round, both written with ``fmt``. A Responses mode is compared
        with the peer's chat cells of the same upstream call (``RESPONSES_MODES``)."""
        for conc in concs:
            peer_mode = RESPONSES_MODES.get(mode, mode)
            sb, other = report.get("standby", mode, conc), report.get(peer, peer_mode, conc)
            if sb is None or other is None or other.rps <= 0:
                continue
            ratio = sb.rps / other.rps
            row(
                mode,
                f"standby / {peer} req/s, c={conc}",
                fmt.format(ratio),
                target if conc == 16 else "",
                met(ratio),
            )
            if sb.proxy_cpu_ms and other.proxy_cpu_ms:
                cpu = other.proxy_cpu_ms / sb.proxy_cpu_ms
                row(mode, f"{peer} / standby CPU per request, c={conc}", fmt.format(cpu))

    for mode in modes:
        chat_mode = RESPONSES_MODES.get(mode, mode)
        direct1 = report.get("direct", chat_mode, 1)
        for name in ("standby",) if mode in RESPONSES_MODES else ("floor", "standby", "litellm"):
            cell = report.get(name, mode, 1)
            if cell is not None and direct1 is not None:
                added = cell.p50_ms - direct1.p50_ms
                is_sb = name == "standby"
                row(
                    mode,
                    f"{name}: added p50 vs direct, c=1",
                    f"{added:+.2f} ms",
                    "≤ 1 ms" if is_sb else "",
                    round(added, 2) <= 1.0,
                )
        versus("floor", mode, (c for c in concs if c > 1), "{:.2f}", "≥ 0.33", lambda r: r >= 1 / 3)
        for conc in (c for c in concs if c > 1):
            ab = report.capture_ab.get((mode, conc))
            if ab is not None:
                spread = f"{min(ab.round_ratios):.2f}-{max(ab.round_ratios):.2f}"
                noisy = abs(ab.control - 1) > CONTROL_TOLERANCE
                row(
                    mode,
                    f"standby capture on / off req/s, c={conc} (one gateway: a capturing "
                    f"route vs one with `capture: false`; {ab.rounds} rounds of {ab.seconds} s "
                    f"runs, order balanced; rounds {spread})",
                    f"{ab.ratio:.2f}",
                    "≥ 0.95" if conc == 16 else "",
                    round(ab.ratio, 2) >= 0.95,
                    "**inconclusive** (A/A control)" if noisy and conc == 16 else None,
                )
                spread = f"{min(ab.control_ratios):.2f}-{max(ab.control_ratios):.2f}"
                row(
                    mode,
                    f"A/A control: the two `capture: false` routes, c={conc} (same runs; "
                    f"rounds {spread})",
                    f"{ab.control:.2f}",
                    f"1 ± {CONTROL_TOLERANCE:.2f}" if conc == 16 else "",
                    result="within" if not noisy else "**outside**: too noisy",
                )
                cpu = f"{ab.arms['on'].cpu_ms:.3f} / {ab.arms['off'].cpu_ms:.3f} ms"
                row(
                    mode,
                    f"standby CPU per request, capture on / off, c={conc} (same runs; the "
                    "gateway and its capture writer)",
                    cpu,
                )
            on, off = report.get("standby", mode, conc), report.get("standby-nocapture", mode, conc)
            if on is not None and off is not None and off.rps > 0:
                row(
                    mode,
                    f"standby / standby-nocapture req/s, c={conc} (the two cells above: "
                    "separate gateways, capture enabled / disabled)",
                    f"{on.rps / off.rps:.2f}",
                )
        for conc in concs:  # standby --workers 2 against --workers 1, capture on in both
            one, two = report.get("standby", mode, conc), report.get("standby-2w", mode, conc)
            if one is None or two is None or one.rps <= 0 or not one.proxy_cpu_ms:
                continue
            faster, cpu = two.rps / one.rps, (two.proxy_cpu_ms or 0.0) / one.proxy_cpu_ms
            row(
                mode,
                f"standby --workers 2 / --workers 1, c={conc}: req/s; CPU per request (the "
                "standby-2w and standby cells)",
                f"{faster:.2f}x; {cpu:.2f}x",
                "req/s > 1x, CPU <= 1.10x" if conc >= 64 else "",
                faster > 1 and cpu <= 1.10,
            )
        if mode not in RESPONSES_MODES:  # the LiteLLM proxy is measured on chat only
            versus("litellm", mode, concs, "{:.1f}x", "> 10x", lambda r: r > 10)
        else:
            for conc in concs:
                resp, chat = (
                    report.get("standby", mode, conc),
                    report.get("standby", chat_mode, conc),
                )
                if resp is None or chat is None or chat.rps <= 0:
                    continue
                cpu = (
                    f"; CPU per request {resp.proxy_cpu_ms:.3f} / {chat.proxy_cpu_ms:.3f} ms"
                    if resp.proxy_cpu_ms and chat.proxy_cpu_ms
                    else ""
                )
                row(
                    mode,
                    f"standby Responses / chat ({chat_mode}) req/s, c={conc}{cpu}",
                    f"{resp.rps / chat.rps:.2f}",
                )
        sb_cells = [c for c in report.cells if c.target == "standby" and c.mode == mode]
        if sb_cells and all(c.error is None for c in sb_cells):
            failures = sum(c.non2xx + c.bad + c.sock_errors for c in sb_cells)
            row(
                mode,
                "standby: non-2xx + bad bodies + socket errors, all c",
                str(failures),
                "0",
                failures == 0,
            )
        top = max(concs)
        for name in ("floor", "standby", "litellm"):
            cell = report.get(name, mode, top)
            if cell is not None and cell.proxy_cpu_ms:
                ms = cell.proxy_cpu_ms
                row(
                    mode,
                    f"{name}: proxy CPU per request, c={top}",
                    f"{ms:.2f} ms (≈ {1000 / ms:,.0f} req/s per core)",
                )
    return lines


def versions() -> str:
    out = []
    for dist in ("standby", "aiohttp", "uvloop", "fastapi", "uvicorn", "starlette", "litellm"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out.append(f"{dist} {importlib.metadata.version(dist)}")
    return ", ".join(out)


def machine_facts() -> list[str]:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("[")[0]
    git = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True, text=True
    ).stdout.strip()
    return [
        f"- machine: `nproc` = {NPROC}, {cpu}, Linux {platform.release()}",
        f"- Python {platform.python_version()}; {versions()}; {wrk.strip()}",
        f"- code: commit {git or '?'}{' + uncommitted changes' if dirty else ''}",
    ]


def render(
    report: Report,
    args: argparse.Namespace,
    command: str,
    started: dt.datetime,
    facts: list[str],
    load: tuple[tuple[float, float, float], tuple[float, float, float]],
    concs: Sequence[int],
    notes: list[str],
    modes: Sequence[str] = MODES,
) -> str:
    (a1, a5, a15), (b1, b5, b15) = load
    lines = [
        BEGIN,
        "",
        f"### Results: {started:%Y-%m-%d %H:%M} UTC"
        + (" (quick smoke run: too short to judge)" if args.quick else ""),
        "",
        f"Command: `{command}` ({args.warmup} s warm-up + {args.duration} s measured per "
        f"cell, one `wrk` thread"
        + (
            "; pinned: proxy on CPU 0, simulator + wrk + capture writer on CPU 1)."
            if args.pin
            else ", no pinning)."
        ),
        "",
        *facts,
        f"- load average (1/5/15 min) before: {a1:.2f} / {a5:.2f} / {a15:.2f}; "
        f"after: {b1:.2f} / {b5:.2f} / {b15:.2f}",
        "",
        *results_table(report),
        "",
        "Derived (the issue's targets for standby; streaming"
        + (
            " and the tools and Responses cases are"
            if TOOLS_MODE in modes or any(m in RESPONSES_MODES for m in modes)
            else " is"
        )
        + " held to the same ones):",
        "",
        *derived(report, concs, modes),
        "",
    ]
    if notes:
        lines += [*(f"- {n}" for n in notes), ""]
    lines.append(END)
    return "\n".join(lines) + "\n"


DOC_INTRO = """\
# Benchmarks

## Gateway overhead (`benchmarks/gateway_overhead.py`)

What a request pays for going through the gateway instead of straight to the upstream, on this
project's usual 2-core machine. Run it from the repository root:

    .venv/bin/python benchmarks/gateway_overhead.py           # full run (~10 min)
    .venv/bin/python benchmarks/gateway_overhead.py --quick   # smoke run (< 60 s), prints only

A full run rewrites only the generated block below; text outside it is kept.

It needs `wrk` (`apt-get install -y wrk`) and, for the LiteLLM row, the LiteLLM proxy's own
dependencies in the venv (if it cannot start, its rows say why and the rest still runs).

"""


def write_doc(path: Path, block: str) -> None:
    text = path.read_text() if path.exists() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + block.rstrip("\n") + tail
    else:
        text = (text.rstrip() + "\n\n" if text.strip() else DOC_INTRO) + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# ----------------------------------------------------------------------------------------------
# main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--duration", type=int, help="measured seconds per cell (default 10; quick 1)")
    p.add_argument("--warmup", type=int, help="warm-up seconds per cell (default 5; quick 1)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 s cells, c=1 and 16, no litellm, prints only",
    )
    p.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM proxy")
    p.add_argument(
        "--tools",
        action="store_true",
        help="add the tools case: five tools declared, a call answered (direct, floor, standby)",
    )
    p.add_argument(
        "--responses",
        action="store_true",
        help="add the Responses cases: POST /v1/responses whole and streamed (standby only)",
    )
    p.add_argument(
        "--pin", action="store_true", help="proxy on CPU 0; simulator, wrk, capture writer on CPU 1"
    )
    p.add_argument("--concurrency", default=None, help="comma list (default 1,16,64)")
    p.add_argument(
        "--ab-rounds",
        type=int,
        default=None,
        help="capture on/off: rounds of one run per route (default 18; a multiple of 6 "
        "balances their order; quick 2)",
    )
    p.add_argument(
        "--ab-seconds", type=int, default=2, help="capture on/off: seconds per run (default 2)"
    )
    p.add_argument(
        "--targets", default=",".join(TARGETS), help=f"comma list from {','.join(TARGETS)}"
    )
    p.add_argument(
        "--output", default=None, help="file to update (default docs/benchmarks.md; quick: none)"
    )
    args = p.parse_args(argv)
    args.duration = args.duration or (1 if args.quick else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 5)
    args.ab_rounds = args.ab_rounds if args.ab_rounds is not None else (2 if args.quick else 18)
    if args.output is None and not args.quick:
        args.output = str(REPO / "docs" / "benchmarks.md")
    return args


@contextlib.contextmanager
def cleanup_on_signals(procs: Procs) -> Iterator[None]:
    def handler(signum: int, frame: object) -> None:
        procs.stop_all()
        raise SystemExit(128 + signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        procs.stop_all()
        for s, h in old.items():
            signal.signal(s, h)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print(
            "error: `wrk` is not installed; it is the load generator this benchmark needs "
            "(Debian/Ubuntu: apt-get install -y wrk)",
            file=sys.stderr,
        )
        return 2
    concs = [int(c) for c in (args.concurrency or ("1,16" if args.quick else "1,16,64")).split(",")]
    names = [t for t in TARGETS if t in args.targets.split(",")]
    if args.quick or args.no_litellm:
        names = [t for t in names if t != "litellm"]
    shown = list(sys.argv[1:] if argv is None else argv)
    command = shlex.join([".venv/bin/python", "benchmarks/gateway_overhead.py", *shown])
    started = dt.datetime.now(dt.UTC)
    load0 = os.getloadavg()
    notes: list[str] = []
    modes = [*MODES, *([TOOLS_MODE] if args.tools else [])]
    modes += list(RESPONSES_MODES) if args.responses else []
    report = Report()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="standby-bench-") as tmp:
        work = Path(tmp)
        procs = Procs(work, pin=args.pin)
        with cleanup_on_signals(procs):
            print(f"starting {', '.join(names)} (logs in {work})", flush=True)
            sim, targets = start_targets(procs, names, modes)
            if args.pin:  # standby's capture writer joins the simulator and wrk
                for target in targets.values():
                    if target.proc is not None and target.name in ("standby", "standby-nocapture"):
                        for pid in child_pids(target.proc.pgid):
                            pin_process(pid, PIN_LAYOUT["writer"])
                            print(
                                f"  {target.name}: capture writer {pid} on CPU "
                                f"{PIN_LAYOUT['writer']}",
                                flush=True,
                            )
            scripts = {mode: wrk_script(work, mode) for mode in modes}
            print(
                f"{'target':8} {'mode':10} {'c':>3} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
                f"{'non2xx':>6} {'bad':>4} {'sock':>4} {'cpu/req':>7} {'other%':>6}",
                flush=True,
            )
            # Cell order: for each (mode, concurrency) every target in turn, so that the
            # targets being compared are measured minutes apart at most, under similar load.
            for mode in modes:
                for conc in concs:
                    for name in (n for n in names if mode in modes_of(n, modes)):
                        target = targets[name]
                        try:
                            cell = measure(
                                target,
                                sim,
                                mode,
                                conc,
                                scripts[mode],
                                args.warmup,
                                args.duration,
                                args.pin,
                            )
                        except (RuntimeError, subprocess.TimeoutExpired) as e:
                            cell = Cell(name, mode, conc, error=str(e)[:200])
                        proc = target.proc
                        if target.unavailable is None and proc is not None and not proc.alive():
                            target.unavailable = f"process died: {proc.log_tail()}"
                            cell.error = cell.error or target.unavailable
                        report.cells.append(cell)
                        print_cell(cell)
            standby = targets.get("standby")
            if standby is not None and standby.unavailable is None and args.ab_rounds > 0:
                # at the target's concurrency (c=16) only, when it is measured: ~2 min a mode
                ab_concs = [16] if 16 in concs else [c for c in concs if c > 1]
                for mode in MODES:
                    for conc in ab_concs:
                        ab = capture_ab(
                            standby, mode, conc, work, args.ab_rounds, args.ab_seconds, args.pin
                        )
                        report.capture_ab[(mode, conc)] = ab
                        rounds = " ".join(f"{r:.2f}" for r in ab.round_ratios)
                        print(
                            f"capture on/off {mode} c={conc}: {ab.ratio:.3f} (rounds: {rounds}); "
                            f"A/A control {ab.control:.3f}",
                            flush=True,
                        )
            for name in ("standby", "litellm"):
                t = targets.get(name)
                if t is not None and t.proc is not None and t.unavailable is None:
                    tail = t.proc.log_tail(5)
                    if "Traceback" in t.proc.log.read_text(errors="replace"):
                        notes.append(f"{name} logged a traceback during the run: {tail}")
    load1 = os.getloadavg()
    elapsed = time.monotonic() - t0
    print(f"finished in {elapsed:.0f} s", flush=True)
    if "litellm" not in names:
        notes.append("LiteLLM proxy not run (--quick / --no-litellm / --targets).")
    block = render(
        report, args, command, started, machine_facts(), (load0, load1), concs, notes, modes
    )
    print()
    print(block)
    if args.output:
        write_doc(Path(args.output), block)
        print(f"wrote {args.output}")
    return 0


def print_cell(c: Cell) -> None:
    if c.error is not None:
        print(f"{c.target:8} {c.mode:10} {c.conc:>3} unavailable: {c.error}", flush=True)
        return
    cpu = "-" if c.proxy_cpu_ms is None else f"{c.proxy_cpu_ms:.2f}"
    print(
        f"{c.target:8} {c.mode:10} {c.conc:>3} {c.rps:>8,.0f} {c.p50_ms:>7.2f} {c.p99_ms:>7.2f} "
        f"{c.non2xx:>6} {c.bad:>4} {c.sock_errors:>4} {cpu:>7} {c.other_cpu_pct:>6.0f}",
        flush=True,
    )


if __name__ == "__main__":
    raise SystemExit(main())
