"""Tables (schemas, validation, atomic I/O), media and the synthetic platform."""

from serendip.data.io import read_table, table_path, write_table
from serendip.data.schemas import SCHEMAS, TABLES, validate

__all__ = ["SCHEMAS", "TABLES", "validate", "read_table", "write_table", "table_path"]
