"""Session commands: moving between views, paging, saving, and the configuration displays."""

from __future__ import annotations

from ikegate.cli.context import CommandContext
from ikegate.cli.params import Integer
from ikegate.cli.render.config import render_config, render_this
from ikegate.cli.tree import CONFIGURE, MANAGE, MONITOR, VISIT, Command
from ikegate.cli.views import ALL_VIEWS, CONFIG_VIEWS, SYSTEM_FRAME, ViewKind

USER = frozenset({ViewKind.USER})

DEFAULT_SCREEN_LENGTH = 24  # rows per screen until ``screen-length N temporary``
SAVE_QUESTION = "Warning: The current configuration will be written to the device. Continue? [Y/N]:"


def _system_view(ctx: CommandContext) -> None:
    ctx.write("Enter system view, return user view with Ctrl+Z.")
    ctx.session.enter_view(SYSTEM_FRAME)


def _quit(ctx: CommandContext) -> None:
    ctx.session.leave_view()


def _return(ctx: CommandContext) -> None:
    ctx.session.return_to_user_view()


def _screen_length(ctx: CommandContext) -> None:
    ctx.session.screen_length = ctx.number("rows")


def _undo_screen_length(ctx: CommandContext) -> None:
    ctx.session.screen_length = DEFAULT_SCREEN_LENGTH


def _save(ctx: CommandContext) -> None:
    callback = ctx.session.save_callback
    text = "\n".join(render_config(ctx.config)) + "\n"

    def answer(reply: str) -> list[str]:
        if reply.strip().lower() not in ("y", "yes"):
            return ["Info: The configuration was not saved."]
        if callback is None:
            return ["Error: No configuration file is set for this device; nothing was written."]
        try:
            callback(text)
        except OSError as exc:
            return [f"Error: Failed to save the configuration: {exc.strerror or exc}."]
        return ["Now saving the current configuration to the device.", "Info: Save the configuration successfully."]

    ctx.session.ask(SAVE_QUESTION, answer)


def _display_current(ctx: CommandContext) -> None:
    for line in render_config(ctx.config):
        ctx.write(line)


def _display_this(ctx: CommandContext) -> None:
    for line in render_this(ctx.config, ctx.session.frame):
        ctx.write(line)


def _display_logbuffer(ctx: CommandContext) -> None:
    for line in ctx.session.logbuffer.render(ctx.config.sysname):
        ctx.write(line)


COMMANDS = [
    Command("system-view", _system_view, USER, level=CONFIGURE),
    Command("quit", _quit, ALL_VIEWS, level=VISIT),
    Command("return", _return, CONFIG_VIEWS, level=VISIT),
    Command(
        "screen-length <rows> temporary",
        _screen_length,
        USER,
        level=VISIT,
        params={"rows": Integer("Number of lines on a screen (0: no paging)", 0, 512)},
    ),
    Command("undo screen-length temporary", _undo_screen_length, USER, level=VISIT),
    Command("save", _save, USER, level=MANAGE),
    Command("display current-configuration", _display_current, ALL_VIEWS, level=MANAGE),
    Command("display this", _display_this, ALL_VIEWS, level=MONITOR),
    Command("display logbuffer", _display_logbuffer, ALL_VIEWS, level=MONITOR),
]
