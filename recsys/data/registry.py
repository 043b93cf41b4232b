"""The dataset registry: what each dataset is, which files it needs, where they come from and
how to cite it. Reading the files is :mod:`recsys.data.loaders`' job; finding them is
:mod:`recsys.data.download`'s.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from recsys.data.schema import ITEM, USER
from recsys.errors import ConfigError

Kind = Literal["ratings", "implicit", "sequence"]

DEFAULT_DATASET = "amazon-digital-music"


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of one dataset.

    ``files`` are the accepted file names in order of preference (the first is the primary one);
    a plain-text name is also accepted gzip-compressed (``NAME.gz``). ``folders`` are the folder
    names the files may sit in under ``$RECSYS_DATA_HOME``.
    """

    name: str
    title: str
    kind: Kind
    files: tuple[str, ...]
    format: str
    licence: str
    citation: str
    homepage: str
    how_to_get: str
    url: str | None = None
    sha256: str | None = None
    embedded: bool = False
    folders: tuple[str, ...] = ()


@dataclass
class Dataset:
    """A loaded interaction table (columns per :mod:`recsys.data.schema`) and where it came from.

    ``unknown_rating_max`` bounds the ratings that are NaN when the source says so (ML-1M's
    partial file: every missing rating is 1..3); it is None when nothing is known about them.
    """

    name: str
    df: pd.DataFrame
    info: DatasetInfo
    source: Path | None = None
    unknown_rating_max: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return int(self.df[USER].nunique())

    @property
    def n_items(self) -> int:
        return int(self.df[ITEM].nunique())

    def __repr__(self) -> str:
        return (f"Dataset(name={self.name!r}, rows={len(self.df):,}, users={self.n_users:,}, "
                f"items={self.n_items:,}, source={str(self.source) if self.source else None!r})")


# --------------------------------------------------------------------------- citations

_MOVIELENS_BIB = """@article{harper2015movielens,
  author = {Harper, F. Maxwell and Konstan, Joseph A.},
  title = {The MovieLens Datasets: History and Context},
  journal = {ACM Transactions on Interactive Intelligent Systems},
  volume = {5}, number = {4}, articleno = {19}, year = {2015},
  doi = {10.1145/2827872}
}"""

_AMAZON_2018_BIB = """@inproceedings{ni2019justifying,
  author = {Ni, Jianmo and Li, Jiacheng and McAuley, Julian},
  title = {Justifying Recommendations using Distantly-Labeled Reviews and Fine-Grained Aspects},
  booktitle = {Proceedings of EMNLP-IJCNLP},
  pages = {188--197}, year = {2019},
  doi = {10.18653/v1/D19-1018}
}"""

_LOCA_BIB = """@inproceedings{choi2021loca,
  author = {Choi, Minjin and Jeong, Yoonki and Lee, Joonseok and Lee, Jongwuk},
  title = {Local Collaborative Autoencoders},
  booktitle = {Proceedings of WSDM},
  year = {2021},
  doi = {10.1145/3437963.3441808}
}"""

_AMAZON_2014_BIB = """@inproceedings{he2016ups,
  author = {He, Ruining and McAuley, Julian},
  title = {Ups and Downs: Modeling the Visual Evolution of Fashion Trends with One-Class Collaborative Filtering},
  booktitle = {Proceedings of WWW},
  pages = {507--517}, year = {2016},
  doi = {10.1145/2872427.2883037}
}

@inproceedings{mcauley2015image,
  author = {McAuley, Julian and Targett, Christopher and Shi, Qinfeng and van den Hengel, Anton},
  title = {Image-Based Recommendations on Styles and Substitutes},
  booktitle = {Proceedings of SIGIR},
  pages = {43--52}, year = {2015},
  doi = {10.1145/2766462.2767755}
}"""

_S3REC_BIB = """@inproceedings{zhou2020s3rec,
  author = {Zhou, Kun and Wang, Hui and Zhao, Wayne Xin and Zhu, Yutao and Wang, Sirui and Zhang, Fuzheng and Wang, Zhongyuan and Wen, Ji-Rong},
  title = {S3-Rec: Self-Supervised Learning for Sequential Recommendation with Mutual Information Maximization},
  booktitle = {Proceedings of CIKM},
  pages = {1893--1902}, year = {2020},
  doi = {10.1145/3340531.3411954}
}"""

_NETFLIX_BIB = """@inproceedings{bennett2007netflix,
  author = {Bennett, James and Lanning, Stan},
  title = {The Netflix Prize},
  booktitle = {Proceedings of KDD Cup and Workshop},
  year = {2007}
}"""

_MSD_BIB = """@inproceedings{bertin2011msd,
  author = {Bertin-Mahieux, Thierry and Ellis, Daniel P. W. and Whitman, Brian and Lamere, Paul},
  title = {The Million Song Dataset},
  booktitle = {Proceedings of ISMIR},
  year = {2011}
}"""

_EALS_BIB = """@inproceedings{he2016fast,
  author = {He, Xiangnan and Zhang, Hanwang and Kan, Min-Yen and Chua, Tat-Seng},
  title = {Fast Matrix Factorization for Online Recommendation with Implicit Feedback},
  booktitle = {Proceedings of SIGIR},
  pages = {549--558}, year = {2016},
  doi = {10.1145/2911451.2911489}
}"""

_MOVIELENS_LICENCE = ("GroupLens usage licence: research use only; no commercial use and no "
                      "redistribution without separate permission; cite Harper & Konstan (2015).")
_AMAZON_LICENCE = ("Amazon review data (McAuley lab, UCSD): research use only; cite the dataset "
                   "paper and the paper whose preprocessing is used.")

_GROUPLENS = "https://files.grouplens.org/datasets/movielens"


def _movielens_how_to_get(folder: str, file: str, note: str = "") -> str:
    return (f"Download {folder}.zip from https://grouplens.org/datasets/movielens/ (recsys fetches "
            f"it into its cache by itself when online). Put the zip, or {file} from it, in "
            f"$RECSYS_DATA_HOME/{folder}/, or pass data_dir= pointing at the folder that holds it.{note}")


# --------------------------------------------------------------------------- the registry

# MovieLens sha256 pins. ml-100k, ml-1m and ml-20m: tensorflow/datasets
# tensorflow_datasets/url_checksums/movielens.txt (commit 1c076ac3); each digest is repeated in
# several independent repositories, e.g. ISG-Siegen/OmniRec src/omnirec/data_loaders/. ml-10m:
# ISG-Siegen/OmniRec src/omnirec/data_loaders/movielens_small.py (commit e498cceb), corroborated by
# other repositories recording the same digest next to GroupLens' published MD5
# ce571fd55effeba0271552578f2648bd and the size 65,566,137 bytes.
_DATASETS = (
    DatasetInfo(
        name="amazon-digital-music",
        title="Amazon Digital Music 2018 5-core, LOCA raw ratings (embedded default)",
        kind="ratings",
        files=("amusic.rating",),
        format="CSV without header: user_id,item_id,rating,timestamp (ids remapped from 1, "
               "ratings 1-5, unix seconds at day resolution)",
        licence=_AMAZON_LICENCE + " The copy shipped in this package is from jin530/LOCA "
                                  "(see recsys/data/embedded/ATTRIBUTION.md).",
        citation=_AMAZON_2018_BIB + "\n\n" + _LOCA_BIB,
        homepage="https://github.com/jin530/LOCA",
        how_to_get="Nothing to do: a copy ships inside the package (recsys/data/embedded/). A file "
                   "amusic.rating(.gz) in $RECSYS_DATA_HOME/amazon-digital-music-loca/ or in "
                   "data_dir takes precedence; the original is data/recsys_data/amusic/amusic.rating "
                   "in https://github.com/jin530/LOCA.",
        embedded=True,
        folders=("amazon-digital-music-loca", "amazon-digital-music"),
    ),
    DatasetInfo(
        name="ml-100k",
        title="MovieLens 100K",
        kind="ratings",
        files=("u.data", "ml-100k.zip"),
        format="u.data: tab-separated user_id, item_id, rating, timestamp; no header",
        licence=_MOVIELENS_LICENCE,
        citation=_MOVIELENS_BIB,
        homepage="https://grouplens.org/datasets/movielens/100k/",
        how_to_get=_movielens_how_to_get("ml-100k", "u.data"),
        url=f"{_GROUPLENS}/ml-100k.zip",
        sha256="50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
        folders=("ml-100k",),
    ),
    DatasetInfo(
        name="ml-1m",
        title="MovieLens 1M",
        kind="ratings",
        files=("ratings.dat", "ml-1m.zip", "ratings_partial.csv"),
        format="ratings.dat: UserID::MovieID::Rating::Timestamp, no header; or the shared "
               "ratings_partial.csv: header user_id,movie_id,rating,timestamp,chrono_rank with "
               "rating and timestamp empty where unknown (all such ratings are 1-3)",
        licence=_MOVIELENS_LICENCE,
        citation=_MOVIELENS_BIB,
        homepage="https://grouplens.org/datasets/movielens/1m/",
        how_to_get=_movielens_how_to_get(
            "ml-1m", "ratings.dat", " The project's shared data folder has ratings_partial.csv.gz "
            "instead (all 1,000,209 interactions and their per-user order, but only 681,991 "
            "ratings); the official file is preferred when both are present."),
        url=f"{_GROUPLENS}/ml-1m.zip",
        sha256="a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
        folders=("ml-1m",),
    ),
    DatasetInfo(
        name="ml-10m",
        title="MovieLens 10M",
        kind="ratings",
        files=("ratings.dat", "ml-10m.zip"),
        format="ratings.dat: UserID::MovieID::Rating::Timestamp (half-star ratings), no header",
        licence=_MOVIELENS_LICENCE,
        citation=_MOVIELENS_BIB,
        homepage="https://grouplens.org/datasets/movielens/10m/",
        how_to_get=_movielens_how_to_get("ml-10m", "ratings.dat", " The zip's own folder name, "
                                          "ml-10M100K/, is accepted under $RECSYS_DATA_HOME too."),
        url=f"{_GROUPLENS}/ml-10m.zip",
        sha256="813c411ccb6122564edfe752e7f80c4dcc5aa25fa94c93622f6877a7ba252862",
        folders=("ml-10m", "ml-10M100K"),
    ),
    DatasetInfo(
        name="ml-20m",
        title="MovieLens 20M",
        kind="ratings",
        files=("ratings.csv", "ml-20m.zip"),
        format="ratings.csv: header userId,movieId,rating,timestamp (half-star ratings)",
        licence=_MOVIELENS_LICENCE,
        citation=_MOVIELENS_BIB,
        homepage="https://grouplens.org/datasets/movielens/20m/",
        how_to_get=_movielens_how_to_get("ml-20m", "ratings.csv"),
        url=f"{_GROUPLENS}/ml-20m.zip",
        sha256="96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3",
        folders=("ml-20m",),
    ),
    DatasetInfo(
        name="amazon-beauty",
        title="Amazon Beauty (2014), S3-Rec sequences",
        kind="sequence",
        files=("Beauty.txt",),
        format="one line per user: user_id item_id item_id ... separated by spaces, in "
               "chronological order; no ratings, no timestamps",
        licence=_AMAZON_LICENCE,
        citation=_AMAZON_2014_BIB + "\n\n" + _S3REC_BIB,
        homepage="https://github.com/RUCAIBox/CIKM2020-S3Rec",
        how_to_get="Take data/Beauty.txt from https://github.com/RUCAIBox/CIKM2020-S3Rec and put "
                   "it (or Beauty.txt.gz) in $RECSYS_DATA_HOME/amazon-s3rec/, or pass data_dir=.",
        folders=("amazon-s3rec",),
    ),
    DatasetInfo(
        name="amazon-toys",
        title="Amazon Toys and Games (2014), S3-Rec sequences",
        kind="sequence",
        files=("Toys_and_Games.txt",),
        format="one line per user: user_id item_id item_id ... separated by spaces, in "
               "chronological order; no ratings, no timestamps",
        licence=_AMAZON_LICENCE,
        citation=_AMAZON_2014_BIB + "\n\n" + _S3REC_BIB,
        homepage="https://github.com/RUCAIBox/CIKM2020-S3Rec",
        how_to_get="Take data/Toys_and_Games.txt from https://github.com/RUCAIBox/CIKM2020-S3Rec "
                   "and put it (or Toys_and_Games.txt.gz) in $RECSYS_DATA_HOME/amazon-s3rec/, "
                   "or pass data_dir=.",
        folders=("amazon-s3rec",),
    ),
    DatasetInfo(
        name="netflix",
        title="Netflix Prize training set",
        kind="ratings",
        files=("combined_data_1.txt", "training_set"),
        format="combined_data_1..4.txt (read together), or the folder training_set/ of "
               "mv_*.txt files: a 'MovieID:' line followed by 'CustomerID,Rating,YYYY-MM-DD' lines",
        licence="Netflix Prize data: non-commercial research use under the Netflix Prize rules; "
                "no longer distributed by Netflix.",
        citation=_NETFLIX_BIB,
        homepage="https://www.kaggle.com/datasets/netflix-inc/netflix-prize-data",
        how_to_get="Netflix no longer distributes the data; a copy is on Kaggle (netflix-inc/"
                   "netflix-prize-data). Put combined_data_1.txt .. combined_data_4.txt, or the "
                   "training_set/ folder, in $RECSYS_DATA_HOME/netflix/, or pass data_dir=.",
        folders=("netflix", "netflix-prize"),
    ),
    DatasetInfo(
        name="msd",
        title="Million Song Dataset, Echo Nest Taste Profile subset",
        kind="implicit",
        files=("train_triplets.txt",),
        format="tab-separated user_id, song_id, play_count; no header (the play count becomes "
               "the rating column)",
        licence="Echo Nest Taste Profile Subset: research use under the Million Song Dataset "
                "terms (http://millionsongdataset.com/tasteprofile/).",
        citation=_MSD_BIB,
        homepage="http://millionsongdataset.com/tasteprofile/",
        how_to_get="Download train_triplets.txt (the Taste Profile subset) from "
                   "http://millionsongdataset.com/tasteprofile/ and put it in "
                   "$RECSYS_DATA_HOME/msd/, or pass data_dir=.",
        folders=("msd", "taste-profile"),
    ),
    DatasetInfo(
        name="yelp",
        title="Yelp reviews",
        kind="ratings",
        files=("yelp.rating", "yelp_academic_dataset_review.json"),
        format="yelp.rating: tab-separated user item rating timestamp, no header (He et al., "
               "SIGIR 2016, as used by LOCA and TALL); or the Yelp Open Dataset's JSON-lines "
               "review file (user_id, business_id, stars, date)",
        licence="Yelp Dataset Terms of Use: academic, non-commercial use only.",
        citation=_EALS_BIB,
        homepage="https://www.yelp.com/dataset",
        how_to_get="Take data/yelp.rating from https://github.com/hexiangnan/sigir16-eals, or "
                   "download the Yelp Open Dataset from https://www.yelp.com/dataset and extract "
                   "yelp_academic_dataset_review.json; put the file in $RECSYS_DATA_HOME/yelp/, "
                   "or pass data_dir=.",
        folders=("yelp",),
    ),
    DatasetInfo(
        name="amazon-cds",
        title="Amazon CDs and Vinyl (2018), ratings only",
        kind="ratings",
        files=("CDs_and_Vinyl.csv",),
        format="CSV without header: item,user,rating,timestamp (item first)",
        licence=_AMAZON_LICENCE,
        citation=_AMAZON_2018_BIB,
        homepage="https://cseweb.ucsd.edu/~jmcauley/datasets/amazon_v2/",
        how_to_get="Download the 'ratings only' file CDs_and_Vinyl.csv from "
                   "https://cseweb.ucsd.edu/~jmcauley/datasets/amazon_v2/ and put it in "
                   "$RECSYS_DATA_HOME/amazon-cds/, or pass data_dir=.",
        folders=("amazon-cds", "amazon"),
    ),
    DatasetInfo(
        name="csv",
        title="Any delimited interaction file",
        kind="ratings",
        files=(),
        format="a delimited file; options: path (required), columns={'user': ..., 'item': ..., "
               "'rating': ..., 'timestamp': ..., 'order': ...} mapping our names to the file's "
               "column names or 0-based positions (user and item required), sep (default ','), "
               "header (default: True for names, False for positions)",
        licence="that of the file you load",
        citation="",
        homepage="",
        how_to_get="Pass --data-path FILE in a flow (path= in code; relative paths are taken from data_dir when given).",
    ),
    DatasetInfo(
        name="synthetic",
        title="Synthetic long-tail interactions with niche user groups",
        kind="ratings",
        files=(),
        format="generated in memory by recsys.data.make_synthetic (its arguments are the options)",
        licence="generated data; no restrictions",
        citation="",
        homepage="",
        how_to_get="Nothing to get: the data is generated from a seed.",
    ),
)

_REGISTRY: dict[str, DatasetInfo] = {info.name: info for info in _DATASETS}


def list_datasets() -> list[str]:
    """Names accepted by :func:`~recsys.data.load_dataset`, sorted."""
    return sorted(_REGISTRY)


def get_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name``; ConfigError naming the valid names if unknown."""
    info = _REGISTRY.get(name)
    if info is None:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigError(f"unknown dataset {name!r}.{hint} Valid datasets: {', '.join(list_datasets())}")
    return info
