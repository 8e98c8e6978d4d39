"""The user service's problem types: what its routes answer when a request cannot be done."""

from __future__ import annotations

from shared.errors import Conflict, NotFound, TooManyRequests, Unauthorized


class EmailAlreadyRegistered(Conflict):
    title = "E-mail already registered"
    type_slug = "email-taken"


class InvalidCredentials(Unauthorized):
    title = "Invalid credentials"


class UserNotFound(NotFound):
    title = "User not found"


class LoginThrottled(TooManyRequests):
    title = "Too many failed logins"
    type_slug = "login-throttled"
