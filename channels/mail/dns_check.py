"""`distributor check --dns`: what receivers will find in DNS about the mail of the email channel.

One line each for SPF (does the envelope sender's domain authorise the relay's address?), the DKIM key
of each selector (is the published key the one in settings?), DMARC for the From domain (present, its
policy, and whether SPF and DKIM align with From), and the MX of the bounce domain. Healthy lines begin
`ok`; the others say what to publish. dnspython asks the resolver of the `dns` settings.

SPF is evaluated here for just the question asked, with RFC 7208's bound of ten lookups: ip4, ip6, a,
mx, include, redirect and all. pyspf, the library for whole SPF checks, asks dnspython's process-wide
resolver through a call dnspython 2 deprecates, so it cannot be pointed at the `dns` settings. A record
with macros, `exists` or `ptr` is reported as not evaluated rather than guessed.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import dns.exception
import dns.name
import dns.resolver

from distributor.channel import ServiceCheck
from distributor.channels.mail.dkim import DkimKey, alignment_problem, load_keys
from distributor.errors import SettingsError
from distributor.settings import DnsSettings, Settings
from distributor.validate.addresses import domain_of

_SPF_LOOKUPS = 10            # RFC 7208 4.6.4
_SPF_VOID_LOOKUPS = 2
_MX_HOSTS = 10
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class _Unanswered(Exception):
    """The resolver gave no usable answer (timeout, SERVFAIL): the line says so instead of a verdict."""


class _Unevaluated(Exception):
    """The SPF record needs more than this check evaluates (macros, exists, ptr, too many lookups)."""


def mail_dns_checks(settings: Settings) -> list[ServiceCheck]:
    """One check per record receivers look up for the email channel's mail, in the order they do."""
    resolver = _Resolver(settings.dns)
    email = settings.channels.email
    from_domain = domain_of(email.from_address)
    envelope_domain = domain_of(email.return_path or email.from_address)
    keys: tuple[DkimKey, ...] = ()
    checks = [_guarded("spf", partial(_spf, resolver, envelope_domain, settings.smtp.host))]
    dkim_settings = settings.smtp.dkim
    if dkim_settings is None:
        checks.append(ServiceCheck("dkim", True, "ok, not signed here (smtp.dkim is not set): the relay must "
                                                 f"sign with d={from_domain} or a parent of it"))
    else:
        try:
            keys = load_keys(dkim_settings)
        except SettingsError as exc:
            checks.append(ServiceCheck("dkim", False, str(exc)))
        checks += [_guarded("dkim", partial(_dkim, resolver, dkim_settings.domain, key)) for key in keys]
    dkim_domain = dkim_settings.domain if dkim_settings is not None else None
    checks.append(_guarded("dmarc", partial(_dmarc, resolver, from_domain, envelope_domain, dkim_domain)))
    checks.append(_guarded("mx", partial(_mx, resolver, envelope_domain)))
    return checks


def _guarded(service: str, check: Callable[[], ServiceCheck]) -> ServiceCheck:
    try:
        return check()
    except _Unanswered as exc:
        return ServiceCheck(service, False, str(exc))


class _Resolver:
    """dnspython's resolver as the `dns` settings describe it, answering with lists of strings."""

    def __init__(self, settings: DnsSettings):
        self._resolver = dns.resolver.Resolver(configure=not settings.nameservers)
        if settings.nameservers:
            self._resolver.nameservers = list(settings.nameservers)
        self._resolver.port = settings.port
        self._resolver.timeout = self._resolver.lifetime = settings.timeout_seconds
        self._where = f"{', '.join(settings.nameservers) or 'the system resolver'}:{settings.port}"
        self._timeout = settings.timeout_seconds

    def lookup(self, name: str, kind: str) -> list[str]:
        """The records of `kind` at `name` as text (TXT strings joined); [] when there are none."""
        try:
            answer = self._resolver.resolve(name, kind)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.Timeout:
            raise _Unanswered(f"no answer for {name} {kind} from {self._where} in {self._timeout:g} s") from None
        except (dns.resolver.NoNameservers, dns.name.NameTooLong, dns.name.EmptyLabel) as exc:
            raise _Unanswered(f"{name} {kind} cannot be looked up: {exc.__class__.__name__}") from None
        if kind == "TXT":
            return [b"".join(record.strings).decode("utf-8", "replace") for record in answer]
        return [record.to_text() for record in answer]

    def addresses(self, name: str) -> list[IpAddress]:
        return [ipaddress.ip_address(text) for kind in ("A", "AAAA") for text in self.lookup(name, kind)]


def _spf(resolver: _Resolver, domain: str, relay_host: str) -> ServiceCheck:
    records = [text for text in resolver.lookup(domain, "TXT") if _is_spf(text)]
    if not records:
        return ServiceCheck("spf", False, f"no SPF record at {domain}: publish one, e.g. \"v=spf1 include:<your "
                                          "relay's SPF domain> -all\" (the relay's documentation names it)")
    if len(records) > 1:
        return ServiceCheck("spf", False, f"{len(records)} SPF records at {domain}: receivers treat that as an "
                                          "error (permerror); merge them into one")
    try:
        relay = [ipaddress.ip_address(relay_host)]
    except ValueError:
        relay = resolver.addresses(relay_host)
    if not relay:
        return ServiceCheck("spf", False, f"smtp.host {relay_host} has no address in DNS to check SPF for")
    evaluation = _SpfEvaluation(resolver)
    try:
        verdicts = {address: evaluation.result(domain, address) for address in relay}
    except _Unevaluated as exc:
        return ServiceCheck("spf", False, f"the SPF record at {domain} was not evaluated: {exc}; check it by hand")
    private = [str(a) for a in relay if a.is_private or a.is_loopback]
    note = (f" (smtp.host {', '.join(private)} is a private address: receivers see the relay's public one)"
            if private else "")
    failing = [f"{address} ({verdict})" for address, verdict in verdicts.items() if verdict != "pass"]
    if failing:
        return ServiceCheck("spf", False, f"{domain} does not authorise the relay {', '.join(failing)}: add the "
                                          f"relay's include: or ip4:/ip6: to \"{records[0]}\"{note}")
    return ServiceCheck("spf", True, f"ok, {domain} authorises the relay "
                                     f"{', '.join(str(a) for a in relay)}{note}")


def _is_spf(text: str) -> bool:
    return text.lower() == "v=spf1" or text.lower().startswith("v=spf1 ")


@dataclass
class _SpfEvaluation:
    """The result (pass, fail, softfail, neutral) of one SPF check, lookups counted across includes."""

    resolver: _Resolver
    lookups: int = 0
    void_lookups: int = 0

    def result(self, domain: str, address: IpAddress) -> str:
        records = [text for text in self._lookup(domain, "TXT") if _is_spf(text)]
        if len(records) != 1:
            raise _Unevaluated(f"{domain} has {len(records)} SPF records")
        redirect = None
        for term in records[0].split()[1:]:
            if "%" in term:
                raise _Unevaluated(f"macros ({term})")
            if term.lower().startswith("redirect="):
                redirect = term.split("=", 1)[1]
                continue
            if "=" in term and ":" not in term.split("=", 1)[0]:
                continue                                   # another modifier (exp=): no bearing on the result
            qualifier, mechanism = (term[0], term[1:]) if term[0] in "+-~?" else ("+", term)
            if self._matches(mechanism, domain, address):
                return {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}[qualifier]
        if redirect is not None:
            self._count()
            return self.result(redirect, address)
        return "neutral"

    def _matches(self, mechanism: str, domain: str, address: IpAddress) -> bool:
        name, _, argument = mechanism.partition(":")
        name, _, cidr = name.lower().partition("/")       # a/24, mx/24: the prefix with no domain
        if name == "all":
            return True
        if name in ("ip4", "ip6"):
            try:
                return address in ipaddress.ip_network(argument, strict=False)
            except ValueError:
                raise _Unevaluated(f"{mechanism} is not a network") from None
        if name == "include":
            self._count()
            return self.result(argument, address) == "pass"
        if name in ("a", "mx"):
            self._count()
            target, _, domain_cidr = argument.partition("/")
            target = target or domain
            hosts = [target] if name == "a" else \
                [record.split()[-1].rstrip(".") for record in self._lookup(target, "MX")][:_MX_HOSTS]
            network_bits = _prefix_bits(domain_cidr or cidr, address)
            return any(address in ipaddress.ip_network(f"{found}/{network_bits}", strict=False)
                       for host in hosts for found in self.resolver.addresses(host) if found.version == address.version)
        raise _Unevaluated(f"the mechanism {mechanism}")

    def _count(self) -> None:
        self.lookups += 1
        if self.lookups > _SPF_LOOKUPS:
            raise _Unevaluated(f"more than {_SPF_LOOKUPS} DNS lookups, which receivers refuse (permerror)")

    def _lookup(self, name: str, kind: str) -> list[str]:
        found = self.resolver.lookup(name, kind)
        if not found:
            self.void_lookups += 1
            if self.void_lookups > _SPF_VOID_LOOKUPS:
                raise _Unevaluated(f"more than {_SPF_VOID_LOOKUPS} lookups without an answer")
        return found


def _prefix_bits(cidr: str, address: IpAddress) -> int:
    """The prefix length of an a or mx mechanism for `address`: `24`, `24//64` or `/64` (RFC 7208 5.6)."""
    ipv4, _, ipv6 = cidr.partition("//")
    text = ipv4 if address.version == 4 else ipv6
    if not text:
        return address.max_prefixlen
    if not text.isdigit() or int(text) > address.max_prefixlen:
        raise _Unevaluated(f"the prefix /{cidr}")
    return int(text)


def _tags(record: str) -> dict[str, str]:
    """A tag=value list (DKIM, DMARC records) with the whitespace around tags and inside values dropped."""
    tags = {}
    for item in record.split(";"):
        name, separator, value = item.partition("=")
        if separator:
            tags[name.strip().lower()] = "".join(value.split())
    return tags


def _dkim(resolver: _Resolver, domain: str, key: DkimKey) -> ServiceCheck:
    name = f"{key.selector}._domainkey.{domain}"
    found = resolver.lookup(name, "TXT")
    wanted = key.public_record()
    if not found:
        return ServiceCheck("dkim", False, f"no key at {name}: publish the TXT record \"{wanted}\"")
    tags = _tags(found[0])
    kind = "ed25519" if key.algorithm == "ed25519-sha256" else "rsa"
    if not tags.get("p"):
        return ServiceCheck("dkim", False, f"the key at {name} is revoked (empty p=): publish \"{wanted}\"")
    if tags.get("p") != key.public_p() or tags.get("k", "rsa").lower() != kind:
        return ServiceCheck("dkim", False, f"the key at {name} is not the public half of the private key in "
                                           f"settings: publish \"{wanted}\"")
    return ServiceCheck("dkim", True, f"ok, {name} holds the public half of the {kind} key in settings")


def _dmarc(resolver: _Resolver, from_domain: str, envelope_domain: str, dkim_domain: str | None) -> ServiceCheck:
    asked = [from_domain]
    organizational = ".".join(from_domain.split(".")[-2:])     # without the public suffix list: two labels
    if organizational != from_domain:
        asked.append(organizational)
    for domain in asked:
        records = [text for text in resolver.lookup(f"_dmarc.{domain}", "TXT")
                   if text.replace(" ", "").upper().startswith("V=DMARC1")]
        if records:
            break
    else:
        return ServiceCheck("dmarc", False, f"no DMARC record at _dmarc.{from_domain}: publish one, e.g. "
                                            f"\"v=DMARC1; p=none; rua=mailto:dmarc@{from_domain}\", then "
                                            "tighten p= once the reports show your mail aligned")
    tags = _tags(records[0])
    policy = tags.get("p", "").lower()
    if policy not in ("none", "quarantine", "reject"):
        return ServiceCheck("dmarc", False, f"the DMARC record at _dmarc.{domain} has no valid p= (none, "
                                            "quarantine or reject)")
    spf_aligned = _aligned(envelope_domain, from_domain, strict=tags.get("aspf", "r").lower() == "s")
    dkim_aligned = dkim_domain is not None and \
        _aligned(dkim_domain, from_domain, strict=tags.get("adkim", "r").lower() == "s")
    where = f"_dmarc.{domain} p={policy}"
    if not (spf_aligned or dkim_aligned):
        problem = alignment_problem(dkim_domain, f"x@{from_domain}") if dkim_domain else "smtp.dkim is not set"
        return ServiceCheck("dmarc", False, f"{where}, but neither the envelope domain {envelope_domain} nor "
                                            f"the DKIM domain aligns with From {from_domain} ({problem})")
    aligned = " and ".join(what for what, ok in (("SPF", spf_aligned), ("DKIM", dkim_aligned)) if ok)
    advice = "; p=none only reports, receivers still deliver what fails" if policy == "none" else ""
    return ServiceCheck("dmarc", True, f"ok, {where}, {aligned} aligned with From {from_domain}{advice}")


def _aligned(domain: str, from_domain: str, *, strict: bool) -> bool:
    if strict:
        return domain == from_domain
    return domain == from_domain or domain.endswith("." + from_domain) or from_domain.endswith("." + domain)


def _mx(resolver: _Resolver, domain: str) -> ServiceCheck:
    records = [record.split() for record in resolver.lookup(domain, "MX")]
    if any(host in (".", "") for _, host in records):
        return ServiceCheck("mx", False, f"{domain} has a null MX (RFC 7505): bounces to the envelope sender "
                                         "cannot arrive; use a bounce domain that receives mail")
    if records:
        hosts = ", ".join(f"{host.rstrip('.')} ({preference})" for preference, host in sorted(
            records, key=lambda record: int(record[0])))
        return ServiceCheck("mx", True, f"ok, bounces to {domain} go to {hosts}")
    if resolver.addresses(domain):
        return ServiceCheck("mx", True, f"ok, {domain} has no MX; bounces go to its own address (publish an MX "
                                        "to choose where)")
    return ServiceCheck("mx", False, f"{domain} has neither MX nor address: bounces to the envelope sender "
                                     "cannot arrive; publish an MX for it")
