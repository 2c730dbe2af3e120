"""The root of every error smcs raises on purpose: ``SmcsError``.

Each layer's errors derive from it, so one ``except SmcsError`` tells an error smcs reports apart from a
bug. The tree (the module that defines each kind in parentheses)::

    SmcsError
    ├── InputError (ValueError)       the caller's input is wrong: an argument, an option, a file's
    │   │                             content, a request field; the message names it
    │   ├── BankError                 bad input to a bank operation (smcs.bank.store)
    │   ├── ConfigError               the configuration file or one of its values (smcs.config)
    │   ├── JournalMismatch           a build journal of another questions file (smcs.ingest.builder.journal)
    │   └── NoModelsConfigured        no backend configured for the models asked (smcs.runtime.host)
    ├── StrategyError (ValueError)    a strategy or its options (smcs.strategies.base)
    ├── BankFormatError               a bank directory that is damaged or not a bank (smcs.bank.store)
    ├── EmbedderError                 the embedder failed; one subclass per kind (smcs.embed.errors)
    ├── BackendError                  a model backend failed; one subclass per kind (smcs.backends.errors)
    ├── QuorumNotMet (RuntimeError)   too few referencers answered (smcs.core.pipeline)
    │   └── StrategyFailed            a strategy could not answer (smcs.strategies.base)
    ├── RequestError                  a request the server refuses, with its gRPC code (smcs.wire.convert)
    └── AttemptFailed                 one HTTP attempt failed; turned into Embedder/BackendError (smcs.http_retry)

The kinds keep the builtin base they had (``BankError`` and every ``InputError`` are still ``ValueError``),
so code catching those goes on working. Anything smcs raises outside this tree (a bare ``ValueError``,
``TypeError``, ``KeyError``, …) is a bug in smcs: the command line reports it as an internal error (exit
status 70) rather than as the user's mistake (exit status 2).
"""

from __future__ import annotations


class SmcsError(Exception):
    """An error smcs raises on purpose, with a message that says what went wrong and where."""


class InputError(SmcsError, ValueError):
    """The input a caller gave (an argument, an option, a file's content, a request field) is wrong; the
    message names it. Still a ``ValueError``, so ``except ValueError`` keeps catching it."""
