#!/usr/bin/env python3
"""The gate over an Autobahn TestSuite fuzzingclient report (wstest exits 0 whatever the
cases gave, so this reads its index.json and per-case files). Writes SUMMARY.md beside
the report and exits 1 if any case failed.

A case passes when Autobahn calls it OK, NON-STRICT, INFORMATIONAL or UNIMPLEMENTED, both
for its behaviour and for its close. Autobahn also assumes the server is an echo server: it
sends data messages and expects them back. c10k's endpoint is a chat, not an echo: it
answers each data message with one JSON text frame (an error frame, since Autobahn's
payloads are not chat posts; docs/protocol.md). Such a case counts as passed ("answered,
not echoed") only when exactly that differs: every received event matches an expected one
except that each data message came back as one c10k error frame, and the close was clean
or was c10k echoing the close code Autobahn itself sent after waiting in vain for its echo.
Anything else, a wrong close code, a missing close, an answer to a frame that had to fail
the connection, is a failure.

usage: gate.py REPORT_DIR [AGENT]"""
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


def main():
    report = sys.argv[1]
    agent = sys.argv[2] if len(sys.argv) > 2 else "c10k"
    index = json.load(open(os.path.join(report, "index.json")))[agent]
    strict, answered, failed = [], [], []
    for case_id, entry in index.items():
        case = json.load(open(os.path.join(report, entry["reportfile"])))
        if case["behavior"] in PASS and case["behaviorClose"] in PASS_CLOSE:
            strict.append(case_id)
        elif answered_not_echoed(case):
            answered.append(case_id)
        else:
            failed.append((case_id, case["behavior"], case["behaviorClose"], case["description"], case["result"]))

    def key(case_id):
        return [int(p) for p in case_id.split(".")]

    groups = {}
    for case_id in strict + answered:
        groups.setdefault(case_id.split(".")[0], [0, 0])[0 if case_id in strict else 1] += 1
    lines = [
        "# Autobahn TestSuite (fuzzingclient) against c10k's WebSocket endpoint",
        "",
        f"{len(index)} cases: {len(strict)} passed as Autobahn judges an echo server, "
        f"{len(answered)} passed but answered with a chat error frame instead of an echo, "
        f"{len(failed)} failed.",
        "",
        "| category | passed | answered, not echoed |",
        "|---|---|---|",
    ]
    for group in sorted(groups, key=int):
        lines.append(f"| {group}.* | {groups[group][0]} | {groups[group][1]} |")
    if failed:
        lines += ["", "## Failed", ""]
        for case_id, behaviour, close, description, result in sorted(failed, key=lambda f: key(f[0])):
            lines.append(f"- {case_id}: {behaviour} / {close}: {description} ({result})")
    lines += ["", f"{len(strict) + len(answered)} passed, {len(failed)} failed"]
    text = "\n".join(lines) + "\n"
    open(os.path.join(report, "SUMMARY.md"), "w").write(text)
    print(text, end="")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
