CREATE MATERIALIZED VIEW IF NOT EXISTS {{ident .Database}}.{{ident (print .Table "_trace_id_ts_mv")}}{{.OnCluster}}
TO {{ident .Database}}.{{ident (.Local (print .Table "_trace_id_ts"))}}
AS SELECT
    TraceId,
    min(toDateTime(Timestamp)) AS Start,
    max(toDateTime(Timestamp)) AS End
FROM {{ident .Database}}.{{ident (.Local .Table)}}
WHERE TraceId != ''
GROUP BY TraceId
