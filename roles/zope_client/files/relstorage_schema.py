"""Create a RelStorage database's schema once, before the clients of a side start: two
clients starting at once would both create it and one of them would fail (a duplicate type).

Usage: relstorage_schema.py <storage conf> (etc/relstorage.conf: a <zodb> section with
<relstorage> and its <postgresql> dsn). Prints "created" when the schema was made now,
"exists" otherwise; exits non-zero on an error (the server unreachable, a wrong password),
with libpq's message, which names no password (the dsn names the passfile).
"""
import re
import sys

import psycopg2
import ZODB.config


def main(path):
    with open(path) as handle:
        text = handle.read()
    dsn = re.search(r'^\s*dsn (.*)$', text, re.M).group(1)
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT to_regclass('object_state')")
            existed = cursor.fetchone()[0] is not None
    finally:
        conn.close()
    # Opening the storage creates the schema (RelStorage's create-schema, true by default),
    # and the database its root object.
    ZODB.config.databaseFromString(text).close()
    print('exists' if existed else 'created')


if __name__ == '__main__':
    main(sys.argv[1])
