"""The worked example: two versions of a customer-support agent and their questions."""
