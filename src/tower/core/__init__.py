"""Pure domain of Tower: no network and no database; only the I/O a caller asks for."""
