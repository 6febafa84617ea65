-- Runs once, when the PostgreSQL volume is first created: a second database for MLflow's
-- backend store beside the Optuna storage (POSTGRES_DB=optuna), both owned by the lll role.
CREATE DATABASE mlflow OWNER lll;
