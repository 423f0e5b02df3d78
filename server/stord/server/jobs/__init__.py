"""Jobs: the JobQueueService contract: port, servicer, and the retry and lease rules every queue shares."""
