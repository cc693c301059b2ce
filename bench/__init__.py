"""streamgnn's benchmarks; each writes its figures to ``bench/results``.

They measure under the worker's heap options (``stream.allocator.worker_heap``). torch
takes the huge-page one only before its first CPU allocation, which importing
torch_geometric already makes, so it is requested here, before any benchmark's imports.
"""

from stream.allocator import request_huge_pages
from stream.settings.sections import WorkerSettings

if WorkerSettings().huge_pages:
    request_huge_pages()
