"""Running a study: storage, Ray scheduling, the search driver, ask/tell, MLflow recording, resume."""
