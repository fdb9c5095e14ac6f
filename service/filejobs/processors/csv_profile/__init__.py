"""``csv-profile``: a CSV's dialect and a profile of every column, in one streaming pass.

* :mod:`~filejobs.processors.csv_profile.processor`: the processor (reading, detection, rows);
* :mod:`~filejobs.processors.csv_profile.columns`: per-column statistics and type inference;
* :mod:`~filejobs.processors.csv_profile.encoding`: the encodings a file can be read with.

The processor's spec stays ``filejobs.processors.csv_profile:CsvProfile``.
"""

from __future__ import annotations

from filejobs.processors.csv_profile.processor import CsvProfile, CsvProfileParams

__all__ = ["CsvProfile", "CsvProfileParams"]
