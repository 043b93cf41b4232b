"""Training utilities shared by the neural models: device choice, seeding, early stopping with a
deep-copied best state, and sparse row batches that are densified (if at all) on the device only."""

from recsys.training.batches import SparseRows, as_csr, iterate_rows
from recsys.training.device import pick_device
from recsys.training.early_stopping import EarlyStopping, snapshot
from recsys.training.seed import seed_everything

__all__ = ["EarlyStopping", "SparseRows", "as_csr", "iterate_rows", "pick_device", "seed_everything", "snapshot"]
