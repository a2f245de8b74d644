"""Adapters that put affectstream inside other frameworks (pipecat), each an optional extra."""
