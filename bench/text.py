"""Made-up but plausible helpdesk text: names, subjects and message bodies of realistic lengths.

Everything comes from a seeded `random.Random`, so a data set of a given size is the same every
time it is built. Bodies are joined from a pool of sentences: cheap enough for millions of rows.
"""

from __future__ import annotations

import random

FIRST_NAMES = [
    "Anna",
    "Ben",
    "Clara",
    "David",
    "Elena",
    "Felix",
    "Greta",
    "Hugo",
    "Ines",
    "Jonas",
    "Katja",
    "Lukas",
    "Maria",
    "Noah",
    "Olga",
    "Paul",
    "Quinn",
    "Rosa",
    "Samuel",
    "Tanja",
    "Uwe",
    "Vera",
    "Walter",
    "Xenia",
    "Yusuf",
    "Zoe",
    "Amir",
    "Beatriz",
    "Chen",
    "Dmitri",
    "Emeka",
    "Fatima",
    "Giorgio",
    "Hana",
    "Ivan",
    "Jia",
    "Kwame",
    "Leila",
    "Mateo",
    "Nadia",
    "Oscar",
    "Priya",
    "Rahul",
    "Sofia",
    "Tomas",
    "Aiko",
]
LAST_NAMES = [
    "Schmidt",
    "Meyer",
    "Weber",
    "Fischer",
    "Novak",
    "Rossi",
    "Garcia",
    "Silva",
    "Kowalski",
    "Jensen",
    "Nilsson",
    "Dubois",
    "Martin",
    "Bernard",
    "Moreau",
    "Laurent",
    "Costa",
    "Santos",
    "Oliveira",
    "Okafor",
    "Mensah",
    "Tanaka",
    "Suzuki",
    "Kim",
    "Park",
    "Nguyen",
    "Tran",
    "Patel",
    "Shah",
    "Singh",
    "Haddad",
    "Khalil",
    "Ivanova",
    "Petrov",
    "Horvat",
    "Kovacs",
    "Nagy",
    "Popescu",
    "Murphy",
    "Kelly",
]
DOMAINS = [
    "example.com",
    "example.org",
    "example.net",
    "acme.test",
    "globex.test",
    "initech.test",
    "umbrella.test",
    "hooli.test",
    "stark.test",
    "wayne.test",
    "wonka.test",
    "tyrell.test",
    "cyberdyne.test",
    "aperture.test",
]
TAGS = [
    "billing",
    "refund",
    "invoice",
    "login",
    "password",
    "sso",
    "api",
    "bug",
    "feature-request",
    "outage",
    "slow",
    "mobile",
    "android",
    "ios",
    "export",
    "import",
    "csv",
    "pdf",
    "vip",
    "enterprise",
    "trial",
    "onboarding",
    "cancellation",
    "gdpr",
    "security",
    "2fa",
    "integration",
    "webhook",
    "email-delivery",
    "spam",
    "attachment",
    "upgrade",
    "downgrade",
    "pricing",
    "discount",
    "partner",
    "reseller",
    "hardware",
    "shipping",
    "warranty",
    "legal",
    "urgent-customer",
]
TEAMS = ("Support", "Billing", "Technical", "Sales", "Partners")

_TOPICS = (
    "my invoice for {month}",
    "cannot log in since the update",
    "password reset mail never arrives",
    "export to CSV is missing columns",
    "refund for order {n}",
    "API returns 500 on /v2/orders",
    "question about the enterprise plan",
    "the mobile app crashes on start",
    "wrong VAT number on invoice {n}",
    "webhook deliveries are delayed",
    "please cancel my subscription",
    "how do I add a second admin?",
    "two-factor codes are rejected",
    "shipment {n} has not arrived",
    "attachment upload fails over 10 MB",
    "data deletion request (GDPR)",
    "SSO with our identity provider",
    "upgrade from the starter plan",
    "duplicate charge on my card",
    "reports page is very slow",
)
_PREFIXES = ("", "", "", "Re: ", "Urgent: ", "Question: ", "Fwd: ", "Help: ")
_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
]

_SENTENCES = (
    "Thank you for getting back to me so quickly.",
    "I have attached a screenshot of the error we see.",
    "This started happening after last Tuesday's update.",
    "Our finance team needs the corrected invoice by the end of the month.",
    "Could you please check what went wrong with the payment?",
    "We tried clearing the cache and signing in again, but nothing changed.",
    "The problem affects about twenty of our users at the moment.",
    "I am happy to jump on a call if that makes things easier.",
    "Please let me know if you need any more information from our side.",
    "The order number is in the subject line of this message.",
    "We rely on this feature for our daily reporting, so it is quite urgent for us.",
    "Is there a workaround we can use until this is fixed?",
    "I have checked the settings page and everything looks correct there.",
    "Our account manager suggested that I contact you directly about this.",
    "The same thing happens in Firefox, Chrome and the desktop app.",
    "We would like to upgrade before the renewal date if possible.",
    "I can confirm that the issue is resolved on our side now, thank you.",
    "Unfortunately the problem came back this morning.",
    "I have forwarded your instructions to our IT department.",
    "Could you explain why the amount differs from the quote we received?",
    "We have not received any confirmation email yet.",
    "The API responds with a timeout after roughly thirty seconds.",
    "Here are the steps to reproduce: open the dashboard, pick last month, press export.",
    "Kind regards and have a nice weekend.",
    "I am sorry to hear about the trouble this has caused.",
    "I have passed this on to our engineering team and will update you as soon as I hear back.",
    "Could you send us the request ID shown at the bottom of the error page?",
    "Your refund has been issued and should appear on your statement within five working days.",
    "I have reset the two-factor settings on your account; please try signing in again.",
    "This is a known issue and a fix is scheduled for the next release.",
    "I have corrected the VAT number and attached the new invoice to this reply.",
    "Please make sure the webhook endpoint answers within ten seconds.",
    "You can find the setting under Administration, then Security.",
    "Let me know whether that solves the problem for you.",
    "I will close this ticket for now; simply reply if anything else comes up.",
    "Customer confirmed by phone; waiting for the signed form.",
    "Checked the logs: the import job failed on row 1,204 with an encoding error.",
    "Escalated to second level, see the linked incident.",
    "Billing says the duplicate charge was reversed yesterday.",
    "VIP customer: please answer within the hour.",
)


class TextMaker:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def person(self, i: int) -> tuple[str, str]:
        """A unique (email, display name) for contact number `i`."""
        rng = self.rng
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        domain = DOMAINS[i % len(DOMAINS)]
        return f"{first.lower()}.{last.lower()}.{i}@{domain}", f"{first} {last}"

    def subject(self) -> str:
        rng = self.rng
        topic = rng.choice(_TOPICS).format(month=rng.choice(_MONTHS), n=rng.randrange(10**7))
        return rng.choice(_PREFIXES) + topic[0].upper() + topic[1:]

    def body(self, chars: int) -> str:
        """About `chars` characters of text in paragraphs of two to five sentences."""
        rng = self.rng
        paragraphs: list[str] = []
        size = 0
        while size < chars:
            paragraph = " ".join(rng.choices(_SENTENCES, k=rng.randint(2, 5)))
            paragraphs.append(paragraph)
            size += len(paragraph) + 2
        return "\n\n".join(paragraphs)

    def length(self, median: int) -> int:
        """A message length around `median`: log-normal, from a one-liner to a long story."""
        return max(20, min(int(self.rng.lognormvariate(0, 0.8) * median), 20 * median))

    def pool(self, median: int, size: int = 4096) -> list[tuple[str, str]]:
        """`size` bodies around `median` characters with their HTML: picking from a pool is what
        makes millions of messages cheap, and lengths keep their spread."""
        bodies = [self.body(self.length(median)) for _ in range(size)]
        return [(body, as_html(body)) for body in bodies]


def as_html(text: str) -> str:
    """The sanitised HTML a mail client would have sent along with `text`."""
    return "".join(f"<p>{p}</p>" for p in text.split("\n\n"))
