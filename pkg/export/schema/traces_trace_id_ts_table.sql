CREATE TABLE IF NOT EXISTS {{ident .Database}}.{{ident (.Local (print .Table "_trace_id_ts"))}}{{.OnCluster}} (
    TraceId String CODEC(ZSTD(1)),
    Start SimpleAggregateFunction(min, DateTime) CODEC(ZSTD(1)),
    End SimpleAggregateFunction(max, DateTime) CODEC(ZSTD(1))
) ENGINE = {{.LookupEngine}}
PARTITION BY toStartOfWeek(Start)
ORDER BY (TraceId)
{{ttl "toDateTime(Start)" .TTL}}
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1
