"""A thin client of the factcheck gRPC API for batch review scripts.

    from factcheck import Client, quote_span, paginate
    fc = Client()                      # FACTCHECK_SERVER, FACTCHECK_TOKEN
    text = fc.stub.GetArticle(pb.GetArticleRequest(name="articles/a1")).text

The generated messages are `factcheck.v1.factcheck_pb2` (imported here as
`pb`); the stub is `Client.stub`. Offsets are Unicode code points, which
is what Python's `str` indexes, so `text[start:end]` is the quote.
"""

from .client import Client, paginate, quote_span, quote_spans, watch
from .v1 import factcheck_pb2 as pb

__all__ = ["Client", "paginate", "quote_span", "quote_spans", "watch", "pb"]
