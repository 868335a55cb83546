"""Tables (schemas, validation, atomic I/O), media and the synthetic platform."""

from serendip.data.schemas import SCHEMAS, TABLES, validate
from serendip.data.io import read_table, write_table, table_path

__all__ = ["SCHEMAS", "TABLES", "validate", "read_table", "write_table", "table_path"]
