#!/bin/sh
# First start of the TimescaleDB container: apply ../sql (mounted at /ttquant-sql) to $POSTGRES_DB
# exactly as ttquant_tasks.storage.migrate would for the "timescale" flavour: per version the common
# file or the .timescale one, each in one transaction with its schema_version row, and the flavour
# recorded in ttquant_meta.  `ttquant db upgrade` later sees these versions as applied.
set -eu
SQL_DIR=${TTQUANT_SQL_DIR:-/ttquant-sql}
psql_db() { psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" "$@"; }

for version in $(ls "$SQL_DIR" | sed -n 's/^\([0-9][0-9][0-9]*\)_.*\.sql$/\1/p' | sort -u); do
    file="$(ls "$SQL_DIR"/"$version"_*.sql | grep -v '\.plain\.sql$' | grep -E "/${version}_[a-z0-9_]+(\.timescale)?\.sql$")"
    name="$(basename "$file" | sed -E 's/(\.timescale)?\.sql$//')"
    extra=""
    if [ "$version" = "001" ]; then
        extra="INSERT INTO ttquant_meta (key, value) VALUES ('flavour', 'timescale');"
    fi
    number=$(expr "$version" + 0)  # "003" -> 3 (POSIX sh has no 10#)
    echo "ttquant: applying $name"
    # One transaction per version with its bookkeeping rows: a failing file leaves nothing behind.
    psql_db --single-transaction --quiet -f "$file" \
        -c "$extra INSERT INTO schema_version (version, name) VALUES ($number, '$name');"
done
