"""The console: the platform's pages for people, served under /console by `clearing serve`.

Local users per organisation with a role, a password (argon2) and a second factor (TOTP);
server-side sessions in a secure, HTTP-only cookie; a CSRF token on every form; every action
recorded with who and when; dual control (maker-checker) for decisions that move money or risk.
"""
