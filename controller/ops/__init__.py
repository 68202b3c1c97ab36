"""What an operator runs beside the controller: check, doctor, status, health and the finished-recording hook."""
