-- Run once by the postgres image on an empty data volume; docker/compose.yaml mounts it into
-- /docker-entrypoint-initdb.d: docker compose -f docker/compose.yaml up -d postgres
-- MLflow and Prefect both migrate with Alembic and each keeps its own `alembic_version` table, so they
-- need separate databases. POSTGRES_DB creates `mlflow`; this creates `prefect`, owned by POSTGRES_USER.
CREATE DATABASE prefect;
