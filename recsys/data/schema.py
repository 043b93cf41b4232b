"""Column names of the interaction table every loader returns.

One row per interaction. ``rating`` and ``timestamp`` are float64 and NaN where the
source does not know them (implicit feedback, or ML-1M's partial file). ``order`` is
optional: a 0-based position in the user's chronological history, present when the
source knows the order better than its timestamps (ML-1M ``chrono_rank``, S3-Rec
sequence files); when present it is the authority for time order.
"""

USER = "user"
ITEM = "item"
RATING = "rating"
TIMESTAMP = "timestamp"
ORDER = "order"

COLUMNS = (USER, ITEM, RATING, TIMESTAMP)
