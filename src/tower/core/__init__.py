"""Pure domain of Tower: no network, no database, no filesystem side effects beyond what a caller asks."""
