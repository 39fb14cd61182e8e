"""The pure core: domain values and functions over them. No I/O, no logging setup."""
