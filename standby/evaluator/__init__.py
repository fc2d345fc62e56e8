"""The evaluator: batch inference on a held-out split (``batch_inference``), the service-LLM
judge (``judge``), the report (``report``) and the promotion gate (``gate``)."""
