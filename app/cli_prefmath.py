"""``declab prefmath``: Bradley–Terry, MaxMin, reward-model, DPO, IPO and ORPO by hand.

Presentation only: every number comes from ``alignment.preference_math``. Values are parsed
here (not by argparse ``type=``) so that bad input is a ``DecodingLabError``: one line, exit 2.
"""

from __future__ import annotations

import argparse
import json
import math

from alignment import preference_math as pm
from decoding.errors import DecodingLabError

H = pm.PARAM_HELP


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prefmath", help="preference math by hand: Bradley-Terry, MaxMin, reward model, DPO, IPO, ORPO",
        description="Compute the preference-learning formulas of the alignment exercises on given numbers.")
    commands = parser.add_subparsers(dest="prefmath_command", metavar="FORMULA")
    commands.required = True

    bt = _command(commands, "bt", "Bradley-Terry pairwise preference table", run_bt)
    bt.add_argument("--ratings", required=True, help=H["ratings"])
    bt.add_argument("--form", default="strength", metavar="{strength,logistic}", help=H["form"])

    mm = _command(commands, "maxmin", "MaxMin (egalitarian) choice over subpopulations", run_maxmin)
    mm.add_argument("--ratings", required=True, help=H["group_ratings"])
    mm.add_argument("--utility", default="rating", metavar="{rating,share}", help=H["utility"])

    rm = _command(commands, "rm", "reward-model loss -log sigmoid(r_w - r_l)", run_rm)
    rm.add_argument("--r-chosen", required=True, help=H["r_chosen"])
    rm.add_argument("--r-rejected", required=True, help=H["r_rejected"])

    dpo = _command(commands, "dpo", "DPO loss and implicit rewards (Rafailov et al. 2023, Eq. 7)", run_dpo)
    _add_probabilities(dpo)
    dpo.add_argument("--beta", default="0.1", help=H["beta"])
    dpo.add_argument("--beta-sweep", help=H["beta_sweep"])

    ipo = _command(commands, "ipo", "IPO loss (Azar et al. 2023, Eq. 17)", run_ipo)
    _add_probabilities(ipo)
    ipo.add_argument("--tau", "--beta", dest="tau", default="0.1", help=H["tau"])
    ipo.add_argument("--chosen-length", default="1", help=H["chosen_length"])
    ipo.add_argument("--rejected-length", default="1", help=H["rejected_length"])

    orpo = _command(commands, "orpo", "ORPO loss (Hong et al. 2024)", run_orpo)
    orpo.add_argument("--chosen-logp", required=True, help=H["chosen_logp"])
    orpo.add_argument("--rejected-logp", required=True, help=H["rejected_logp"])
    orpo.add_argument("--lam", "--lambda", dest="lam", default="0.1", help=H["lam"])
    orpo.add_argument("--nll", help=H["nll"])


def _command(commands, name: str, text: str, func) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, help=text, description=text)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=func)
    return parser


def _add_probabilities(parser: argparse.ArgumentParser) -> None:
    for name in ("pi_chosen", "pi_rejected", "ref_chosen", "ref_rejected"):
        parser.add_argument("--" + name.replace("_", "-"), dest=name, required=True, help=H[name])
    parser.add_argument("--log-probs", action="store_true", help=H["log_probs"])


# --------------------------------------------------------------------------- parsing

def parse_float(name: str, text: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise DecodingLabError(f"--{name.replace('_', '-')}={text!r} is not a number") from None
    if not math.isfinite(value):
        raise DecodingLabError(f"--{name.replace('_', '-')}={text!r} is out of range; allowed: a finite number")
    return value


def parse_int(name: str, text: str) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        raise DecodingLabError(f"--{name.replace('_', '-')}={text!r} is not an integer") from None


def parse_floats(name: str, text: str) -> list[float]:
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(p == "" for p in parts):
        raise DecodingLabError(f"--{name.replace('_', '-')}={text!r} is not a comma-separated list of numbers")
    values = []
    for part in parts:
        try:
            values.append(parse_float(name, part))
        except DecodingLabError:
            raise DecodingLabError(f"--{name.replace('_', '-')}={text!r}: item {part!r} is not a finite number") \
                from None
    return values


def _probabilities(args) -> dict[str, float]:
    return {k: parse_float(k, getattr(args, k)) for k in ("pi_chosen", "pi_rejected", "ref_chosen", "ref_rejected")}


def _emit(args, payload: dict, lines: list[str]) -> int:
    print(json.dumps(payload, indent=2) if args.json else "\n".join(lines))
    return 0


def _row(label: str, formula: str, value: float) -> str:
    return f"  {label:<16} {formula:<36} = {value: .6f}"


# --------------------------------------------------------------------------- commands

def run_bt(args) -> int:
    table = pm.bradley_terry_table(parse_floats("ratings", args.ratings), args.form)
    formula = "P(i>j) = r_i / (r_i + r_j)" if table.form == "strength" else "P(i>j) = sigmoid(r_i - r_j)"
    n = len(table.ratings)
    names = [f"y{i + 1}" for i in range(n)]
    lines = [f"Bradley-Terry ({table.form}): {formula}", "  row beats column",
             "  " + " " * 12 + "".join(f"{name:>9}" for name in names)]
    for i in range(n):
        lines.append(f"  {names[i]:<4} r={table.ratings[i]:<5g}" + "".join(f"{p:9.4f}" for p in table.matrix[i]))
    lines.append("most preferred: " + ", ".join(names[i] for i in table.most_preferred))
    return _emit(args, table.to_dict(), lines)


def run_maxmin(args) -> int:
    groups = [parse_floats("ratings", part) for part in args.ratings.split(";")]
    result = pm.maxmin_choice(groups, args.utility)
    n = len(result.worst_case)
    names = [f"y{i + 1}" for i in range(n)]
    lines = [f"MaxMin ({result.utility}): c in argmax_i min_j u_j(x, y_i)",
             "  " + " " * 6 + "".join(f"{f'group{j + 1}':>9}" for j in range(len(result.utilities))) + f"{'min':>9}"]
    for i in range(n):
        mark = "  <- chosen" if i in result.chosen else ""
        lines.append(f"  {names[i]:<6}" + "".join(f"{row[i]:9.4g}" for row in result.utilities)
                     + f"{result.worst_case[i]:9.4g}{mark}")
    lines.append("each group's favourite: " + "; ".join(
        f"group{j + 1}: {', '.join(names[i] for i in fav)}" for j, fav in enumerate(result.group_favourites)))
    lines.append(f"MaxMin choice: {', '.join(names[i] for i in result.chosen)} (worst-case utility {result.value:g})")
    return _emit(args, result.to_dict(), lines)


def run_rm(args) -> int:
    r_w, r_l = parse_float("r_chosen", args.r_chosen), parse_float("r_rejected", args.r_rejected)
    result = pm.reward_model_loss(r_w, r_l)
    lines = ["Reward-model loss (DPO paper Eq. 2): L = -log sigmoid(r_w - r_l)",
             _row("margin", f"{r_w:g} - {r_l:g}", result.margin),
             _row("P(y_w > y_l)", "sigmoid(margin)", result.p_chosen),
             _row("loss", "-log sigmoid(margin)", result.loss)]
    return _emit(args, result.to_dict(), lines)


def run_dpo(args) -> int:
    probs = _probabilities(args)
    beta = parse_float("beta", args.beta)
    result = pm.dpo_loss(**probs, beta=beta, log_probs=args.log_probs)
    kind = "log-probabilities" if args.log_probs else "probabilities"
    ratio = "({} - {})" if args.log_probs else "log({}/{})"
    lines = [f"DPO (Rafailov et al. 2023, Eq. 7) from {kind}, beta = {beta:g}",
             "  L = -log sigmoid(beta log pi(y_w)/ref(y_w) - beta log pi(y_l)/ref(y_l))",
             _row("chosen reward", "beta " + ratio.format(f"{probs['pi_chosen']:g}", f"{probs['ref_chosen']:g}"),
                  result.chosen_reward),
             _row("rejected reward", "beta " + ratio.format(f"{probs['pi_rejected']:g}",
                                                            f"{probs['ref_rejected']:g}"), result.rejected_reward),
             _row("margin", "chosen - rejected", result.margin),
             _row("loss", "-log sigmoid(margin)", result.loss)]
    payload = result.to_dict()
    if args.beta_sweep:
        sweep = pm.dpo_beta_sweep(**probs, betas=parse_floats("beta_sweep", args.beta_sweep),
                                  log_probs=args.log_probs)
        payload["beta_sweep"] = [row.to_dict() for row in sweep]
        lines += ["", f"  {'beta':>8} {'chosen':>10} {'rejected':>10} {'margin':>10} {'loss':>10}"]
        lines += [f"  {r.beta:8g} {r.chosen_reward:10.4f} {r.rejected_reward:10.4f} {r.margin:10.4f} {r.loss:10.4f}"
                  for r in sweep]
    return _emit(args, payload, lines)


def run_ipo(args) -> int:
    probs = _probabilities(args)
    result = pm.ipo_loss(**probs, tau=parse_float("tau", args.tau), log_probs=args.log_probs,
                         chosen_length=parse_int("chosen_length", args.chosen_length),
                         rejected_length=parse_int("rejected_length", args.rejected_length))
    lines = [f"IPO (Azar et al. 2023, Eq. 17), tau = {result.tau:g}: L = (h - 1/(2 tau))^2",
             _row("chosen ratio", "(log pi(y_w) - log ref(y_w))/|y_w|", result.chosen_logratio),
             _row("rejected ratio", "(log pi(y_l) - log ref(y_l))/|y_l|", result.rejected_logratio),
             _row("h", "chosen ratio - rejected ratio", result.h),
             _row("target", "1/(2 tau)", result.target),
             _row("loss", "(h - target)^2", result.loss)]
    return _emit(args, result.to_dict(), lines)


def run_orpo(args) -> int:
    nll = None if args.nll is None else parse_float("nll", args.nll)
    result = pm.orpo_loss(parse_float("chosen_logp", args.chosen_logp),
                          parse_float("rejected_logp", args.rejected_logp),
                          lam=parse_float("lam", args.lam), nll=nll)
    lines = [f"ORPO (Hong et al. 2024), lambda = {result.lam:g}: L = L_SFT + lambda L_OR",
             _row("odds(y_w)", "P/(1-P), P = exp(mean logp)", result.chosen_odds),
             _row("odds(y_l)", "P/(1-P), P = exp(mean logp)", result.rejected_odds),
             _row("log odds ratio", "log odds(y_w) - log odds(y_l)", result.log_odds_ratio),
             _row("L_OR", "-log sigmoid(log odds ratio)", result.or_loss),
             _row("L_SFT", "chosen NLL" if nll is None else "given --nll", result.sft_loss),
             _row("loss", "L_SFT + lambda L_OR", result.loss)]
    return _emit(args, result.to_dict(), lines)
