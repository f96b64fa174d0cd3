CREATE TABLE IF NOT EXISTS {{ident .Database}}.{{ident .Table}}{{.OnCluster}}
AS {{ident .Database}}.{{ident (.Local .Table)}}
ENGINE = Distributed({{string .Cluster}}, {{string .Database}}, {{string (.Local .Table)}}, cityHash64(TraceId))
