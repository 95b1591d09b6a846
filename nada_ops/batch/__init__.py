"""Batch work: one job model (:mod:`.jobs`: units with a deterministic output folder and a
settings record), run by one backend interface (:mod:`.backends`: in this process, the
default; :mod:`.ray_backend`: on a Ray cluster, optional).  Used by ``render-transition --job``
and ``sweep``; the command line only parses options and prints progress."""
from .backends import BatchReport, BatchStatus, InProcessBackend, make_backend  # noqa: F401
from .jobs import KINDS, AdaptSpec, GridSpec, Unit, load_batch_file, unit_from_dict  # noqa: F401
from .work import ModelCache, UnitResult, prepare_units, run_unit  # noqa: F401
