"""The PostgreSQL SQLSTATE codes the service acts on, named once."""

SERIALIZATION_FAILURE = "40001"
DEADLOCK_DETECTED = "40P01"
RETRYABLE = frozenset({SERIALIZATION_FAILURE, DEADLOCK_DETECTED})
QUERY_CANCELED = "57014"  # statement_timeout
# Class 08 (connection exception), 53 (insufficient resources), 57P (operator intervention:
# shutdown, cannot connect now): the database is unavailable, not the request wrong.
UNAVAILABLE_PREFIXES = ("08", "53", "57P")
