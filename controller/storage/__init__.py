"""Object storage for finished recordings: an S3-compatible bucket (boto3)."""
