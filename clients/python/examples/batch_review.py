#!/usr/bin/env python3
"""Marks every occurrence of each phrase of a CSV in one article, in one
atomic batch.

The CSV has the columns phrase,verdict,note (a header row); verdict is
verified, disputed or unattributed. The server comes from FACTCHECK_SERVER
(default http://127.0.0.1:50051) and the token from FACTCHECK_TOKEN.
Running the same CSV on the same article again changes nothing: the
batch's request_id is derived from both.
"""

import argparse
import csv
import hashlib
import sys
import uuid

import grpc

from factcheck import Client, pb, quote_spans

VERDICTS = {
    "verified": pb.VERDICT_VERIFIED,
    "disputed": pb.VERDICT_DISPUTED,
    "unattributed": pb.VERDICT_UNATTRIBUTED,
}
# The namespace of the request ids this script derives.
NAMESPACE = uuid.UUID("0b6d7f4e-8c1a-4f0e-9d55-3a2f1c7e6b90")
MAX_BATCH = 1000


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("article", help="the article id, e.g. 001_728dec46794c22c1")
    parser.add_argument("csv", help="the CSV file: phrase,verdict,note")
    parser.add_argument("--dry-run", action="store_true", help="validate the batch, write nothing")
    args = parser.parse_args()

    with open(args.csv, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    missing = {"phrase", "verdict", "note"} - set(rows[0].keys() if rows else [])
    if missing:
        print(f"error: {args.csv} lacks the column(s) {', '.join(sorted(missing))}", file=sys.stderr)
        return 2

    with Client() as fc:
        name = f"articles/{args.article}"
        text = fc.stub.GetArticle(pb.GetArticleRequest(name=name)).text
        requests = []
        for line, row in enumerate(rows, start=2):
            verdict = VERDICTS.get(row["verdict"].strip().lower())
            if verdict is None:
                print(f"error: line {line}: verdict {row['verdict']!r} is not one of {', '.join(VERDICTS)}", file=sys.stderr)
                return 2
            spans = quote_spans(text, row["phrase"])
            if not spans:
                print(f"line {line}: {row['phrase']!r} does not occur in {name}; skipped", file=sys.stderr)
            for start, end in spans:
                requests.append(
                    pb.CreateAnnotationRequest(
                        parent=name,
                        annotation=pb.Annotation(
                            span=pb.Span(start=start, end=end),
                            verdict=verdict,
                            note=row["note"],
                        ),
                        expected_quote=row["phrase"],
                    )
                )
        if not requests:
            print("nothing to annotate", file=sys.stderr)
            return 1
        if len(requests) > MAX_BATCH:
            print(f"error: {len(requests)} annotations, over the {MAX_BATCH} one batch may hold", file=sys.stderr)
            return 2
        digest = hashlib.sha256(open(args.csv, "rb").read() + b"\0" + name.encode()).hexdigest()
        request_id = str(uuid.uuid5(NAMESPACE, digest))
        try:
            reply = fc.stub.BatchCreateAnnotations(
                pb.BatchCreateAnnotationsRequest(
                    parent=name, requests=requests, request_id=request_id, validate_only=args.dry_run
                )
            )
        except grpc.RpcError as e:
            print(f"error: {e.code().name}: {e.details()}", file=sys.stderr)
            return 3
    what = "validated" if args.dry_run else "created"
    print(f"{what} {len(reply.annotations)} annotations on {name} (revision {reply.revision})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
