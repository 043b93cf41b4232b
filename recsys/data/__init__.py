"""The data layer: a registry of datasets, loaders returning one interaction table, and a
synthetic generator.

>>> from recsys.data import load_dataset
>>> ds = load_dataset("amazon-digital-music")  # the embedded default; needs no download
>>> ds.df.columns.tolist()
['user', 'item', 'rating', 'timestamp']
"""

from recsys.data.loaders import load_dataset, resolve_data_dir
from recsys.data.registry import DEFAULT_DATASET, Dataset, DatasetInfo, get_info, list_datasets
from recsys.data.synthetic import make_synthetic

__all__ = [
    "DEFAULT_DATASET",
    "Dataset",
    "DatasetInfo",
    "get_info",
    "list_datasets",
    "load_dataset",
    "make_synthetic",
    "resolve_data_dir",
]
