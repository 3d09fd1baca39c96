#!/usr/bin/env python3
"""Re-vendors etcd's protos into this directory, stripped for protox.

Usage: proto/etcd/vendor.py <etcd git checkout> <tag>   (e.g. v3.6.14)

Takes api/etcdserverpb/rpc.proto, api/mvccpb/kv.proto and api/authpb/auth.proto
and LICENSE at <tag>, and removes only what generates no wire format and that
protox cannot resolve without more vendored files:
- the imports of gogoproto, versionpb, google/api and openapiv2;
- `option (gogoproto.*)`, `option (grpc.gateway...openapiv2_swagger)` and
  every rpc's `option (google.api.http)` (the grpc-gateway's REST mapping);
- versionpb's annotations: `(versionpb.etcd_version_*) = "3.N"` become a
  `// etcd 3.N+` comment at the end of the line of the field, or of the
  line that opens the message or enum (none when 3.N is 3.0): an older
  server ignores what it does not know;
- the `Auth` service (the rpcs only: its messages stay), which factcheck does
  not call: it authenticates to etcd with TLS client certificates.
Messages, fields, numbers, enums and every other rpc are left as they are.
"""

import pathlib
import re
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
FILES = ["api/etcdserverpb/rpc.proto", "api/mvccpb/kv.proto", "api/authpb/auth.proto"]
DROPPED_IMPORTS = ("gogoproto/", "etcd/api/versionpb/", "google/api/", "protoc-gen-openapiv2/")


def skip_block(text, start):
    """Index just past the `{ ... }` (and a following `;`) opening at or after start."""
    i = text.index("{", start)
    depth = 0
    while True:
        c = text[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                i += 1
                break
        i += 1
    m = re.compile(r"\s*;").match(text, i)
    return m.end() if m else i


def drop_option_blocks(text, name):
    out = []
    pos = 0
    pattern = re.compile(r"[ \t]*option \(" + re.escape(name) + r"\) = \{")
    while (m := pattern.search(text, pos)) is not None:
        out.append(text[pos : m.start()])
        pos = skip_block(text, m.start())
        # the newline the block ended its line with
        if text.startswith("\n", pos):
            pos += 1
    out.append(text[pos:])
    return "".join(out)


def drop_service(text, name):
    m = re.compile(r"^service " + name + r" \{", re.M).search(text)
    end = skip_block(text, m.start())
    return text[: m.start()] + text[end:].lstrip("\n")


def version_comment(v):
    return "" if v == "3.0" else f"// etcd {v}+"


def strip(text):
    lines = []
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("import ") and any(d in s for d in DROPPED_IMPORTS):
            continue
        if s.startswith("option (gogoproto."):
            continue
        if s == "// for grpc-gateway":
            continue
        m = re.fullmatch(r"(\s*)option \(versionpb\.etcd_version_(?:msg|enum)\) = \"([0-9.]+)\";", line)
        if m:
            # on the line that opens the message or enum it is about
            c = version_comment(m.group(2))
            if c:
                opening = max(i for i, l in enumerate(lines) if l.rstrip().endswith("{"))
                lines[opening] = lines[opening].rstrip() + " " + c
            continue
        m = re.fullmatch(r"(.*?)\s*\[\(versionpb\.etcd_version_(?:field|enum_value)\)\s*=\s*\"([0-9.]+)\"\];(.*)", line)
        if m:
            c = version_comment(m.group(2))
            rest = m.group(3).strip()
            line = m.group(1) + ";" + (" " + c if c else "") + (" " + rest if rest else "")
        if "(gogoproto." in line or "(versionpb." in line:
            raise SystemExit(f"an annotation this script does not know: {line!r}")
        lines.append(line)
    text = "\n".join(lines) + "\n"
    text = drop_option_blocks(text, "grpc.gateway.protoc_gen_openapiv2.options.openapiv2_swagger")
    text = drop_option_blocks(text, "google.api.http")
    # an rpc left with an empty body: `{}` on one line
    text = re.sub(r"\) \{\n\s*\}", ") {}", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    # no blank line left where an option opened a message
    text = re.sub(r"\{( // etcd [0-9.]+\+)?\n\n", r"{\1\n", text)
    return text


def main():
    checkout, tag = sys.argv[1], sys.argv[2]
    show = lambda path: subprocess.run(
        ["git", "-C", checkout, "show", f"{tag}:{path}"], check=True, capture_output=True, text=True
    ).stdout
    for path in FILES:
        text = strip(show(path))
        if path.endswith("rpc.proto"):
            text = drop_service(text, "Auth")
        header = (
            f"// Vendored from etcd-io/etcd {tag}, {path}, by proto/etcd/vendor.py:\n"
            "// gogoproto, versionpb and grpc-gateway annotations stripped, the Auth\n"
            "// service left out; messages and the other services wire-identical.\n"
        )
        out = HERE / path
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(header + text)
    (HERE / "LICENSE").write_text(show("LICENSE"))


if __name__ == "__main__":
    main()
