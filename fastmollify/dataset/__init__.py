"""Attribute a whole data set into a chunked zarr store, on one CPU or many GPUs and nodes (torchrun).

``attribute_dataset(model, dataset, store=..., method=..., **options)`` (``run``), the store and
``open_store`` (``store``), data sets and item checks (``data``), process groups and shares
(``distributed``), and the ``attribute --data`` / ``show`` command line (``cli``).
"""
from .errors import DatasetRunError
from .run import RunSummary, attribute_dataset
from .store import Store, open_store

__all__ = ["attribute_dataset", "open_store", "Store", "RunSummary", "DatasetRunError"]
