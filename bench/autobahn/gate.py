#!/usr/bin/env python3
"""The gate over an Autobahn TestSuite fuzzingclient report (wstest exits 0 whatever the
cases gave, so this reads its index.json and per-case files). Writes SUMMARY.md beside
the report and exits 1 if any case failed on either endpoint.

run.sh points the fuzzingclient at two endpoints of one server, under two agent names:

- `echo`, `GET /ws/echo` (`--websocket-echo`): every message comes back as it was sent,
  which is what Autobahn assumes of a server. A case passes only when Autobahn itself
  calls it OK, NON-STRICT, INFORMATIONAL or UNIMPLEMENTED, both for its behaviour and for
  its close: this is the strict count, and it must be 0 failed.
- `chat`, `/api/rooms/autobahn/ws`: the chat's own endpoint, which answers each data
  message with one JSON text frame (an error frame, since Autobahn's payloads are not chat
  posts; docs/protocol.md), not an echo. A case also passes here ("answered, not echoed")
  when exactly that differs: every received event matches an expected one except that
  each data message came back as one c10k error frame, and the close was clean or was
  c10k echoing the close code Autobahn itself sent after waiting in vain for its echo.
  Anything else, a wrong close code, a missing close, an answer to a frame that had to
  fail the connection, is a failure.

usage: gate.py REPORT_DIR"""
import glob, json, os, sys

PASS = {"OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED"}
PASS_CLOSE = {"OK", "INFORMATIONAL", "UNIMPLEMENTED"}


def events(evs):
    """Autobahn's events with every data message reduced to 'a data message'."""
    return [("message",) if e[0] == "message" else tuple(map(str, e)) for e in evs]


def answered_not_echoed(case):
    received = case["received"]
    messages = [e for e in received if e[0] == "message"]
    if not messages or not all(not e[2] and e[1].startswith('{"error":') for e in messages):
        return False
    expected = [events(v) for k, v in case["expected"].items() if k in ("OK", "NON-STRICT")]
    if events(received) not in expected:
        return False
    if case["behaviorClose"] in PASS_CLOSE:
        return True
    # Autobahn closed first (it stopped waiting for the echo); c10k echoed its code.
    return case.get("localCloseCode") is not None and case.get("localCloseCode") == case.get("remoteCloseCode")


def judge(report, index, lenient):
    """The cases of one agent, sorted into passed, answered-not-echoed and failed."""
    strict, answered, failed = [], [], []
    for case_id, entry in index.items():
        case = json.load(open(os.path.join(report, entry["reportfile"])))
        if case["behavior"] in PASS and case["behaviorClose"] in PASS_CLOSE:
            strict.append(case_id)
        elif lenient and answered_not_echoed(case):
            answered.append(case_id)
        else:
            failed.append((case_id, case["behavior"], case["behaviorClose"], case["description"], case["result"]))
    return strict, answered, failed


def key(case_id):
    return [int(p) for p in case_id.split(".")]


def section(title, index, strict, answered, failed, lenient):
    groups = {}
    for case_id in strict + answered:
        groups.setdefault(case_id.split(".")[0], [0, 0])[0 if case_id in strict else 1] += 1
    if lenient:
        summary = (f"{len(index)} cases: {len(strict)} passed as Autobahn judges an echo server, "
                   f"{len(answered)} passed but answered with a chat error frame instead of an echo, "
                   f"{len(failed)} failed.")
        table = ["| category | passed | answered, not echoed |", "|---|---|---|"]
        table += [f"| {g}.* | {groups[g][0]} | {groups[g][1]} |" for g in sorted(groups, key=int)]
    else:
        summary = f"{len(index)} cases, judged by Autobahn alone: {len(strict)} passed, {len(failed)} failed."
        table = ["| category | passed |", "|---|---|"]
        table += [f"| {g}.* | {groups[g][0]} |" for g in sorted(groups, key=int)]
    lines = ["", f"## {title}", "", summary, ""] + table
    if failed:
        lines += ["", "Failed:", ""]
        for case_id, behaviour, close, description, result in sorted(failed, key=lambda f: key(f[0])):
            lines.append(f"- {case_id}: {behaviour} / {close}: {description} ({result})")
    return lines


ENDPOINTS = [
    ("echo", "The echo endpoint, `/ws/echo`", False),
    ("chat", "The chat endpoint, `/api/rooms/{room}/ws`", True),
]


def main():
    report = sys.argv[1]
    index = json.load(open(os.path.join(report, "index.json")))
    lines = ["# Autobahn TestSuite (fuzzingclient) against c10k's WebSocket endpoints"]
    total_failed = 0
    for agent, title, lenient in ENDPOINTS:
        if agent not in index:
            print(f"!! the report has no agent {agent!r} (run.sh names the endpoints echo and chat)")
            sys.exit(1)
        strict, answered, failed = judge(report, index[agent], lenient)
        total_failed += len(failed)
        lines += section(title, index[agent], strict, answered, failed, lenient)
    lines += ["", f"{total_failed} failed"]
    text = "\n".join(lines) + "\n"
    open(os.path.join(report, "SUMMARY.md"), "w").write(text)
    print(text, end="")
    sys.exit(1 if total_failed else 0)


if __name__ == "__main__":
    main()
