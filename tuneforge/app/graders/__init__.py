"""`/v1/fine_tuning/alpha/graders/*`: validate a grader, and run one on a sample, so a user can debug a
grader before paying for a job. The grading itself is tuneforge/contract/graders, shared with the engine."""
