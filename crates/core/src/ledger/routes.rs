//! `/api/bank/...`: requests in, ledger calls out, JSON shapes back (`docs/protocol.md`,
//! "The ledger").
//!
//! Validation (names, amounts, JSON) answers at once; every operation that reads or changes
//! a balance becomes a [`LedgerCall`], which the model runs like a chat post's store call.
//!
//! No XSRF token, for the reason of the native chat API: these routes are for programs,
//! and every state-changing one requires `Content-Type: application/json` (else 415),
//! which a cross-site form cannot send without a CORS preflight that c10k never grants.

use std::sync::Arc;

use serde_json::{json, Value};

use super::{AccountId, Cents, Ledger, LedgerError, MAX_AMOUNT};
use crate::chat::form::media_type;
use crate::chat::render::to_json;
use crate::http::{Method, Request, Response, StatusCode};
use crate::store::Store;

/// One ledger operation, validated, waiting to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Operation {
    Create { account: AccountId, balance: Cents },
    Balance { account: AccountId },
    Withdraw { account: AccountId, amount: Cents },
    Transfer { from: AccountId, to: AccountId, amount: Cents },
    Audit,
}

impl Operation {
    /// The route label for `/metrics`.
    pub(crate) fn route(&self) -> &'static str {
        match self {
            Operation::Create { .. } => "bank_create",
            Operation::Balance { .. } => "bank_balance",
            Operation::Withdraw { .. } => "bank_withdraw",
            Operation::Transfer { .. } => "bank_transfer",
            Operation::Audit => "bank_audit",
        }
    }
}

/// A ledger operation to run where the model runs store calls (it may block: on a lock, on
/// its yield, on the store).
#[derive(Debug)]
pub(crate) struct LedgerCall {
    ledger: Arc<Ledger>,
    operation: Operation,
}

impl LedgerCall {
    pub(crate) fn new(ledger: Arc<Ledger>, operation: Operation) -> LedgerCall {
        LedgerCall { ledger, operation }
    }

    /// The route's name, for the metrics.
    pub(crate) fn route(&self) -> &'static str {
        self.operation.route()
    }

    /// Runs the operation and renders its answer.
    pub(crate) fn run(self, store: &dyn Store) -> Response {
        let ledger = &self.ledger;
        match self.operation {
            Operation::Create { account, balance } => match ledger.create(store, &account, balance) {
                Ok(balance) => json_response(StatusCode::CREATED, account_json(&account, balance)),
                Err(e) => error_response(&e),
            },
            Operation::Balance { account } => match ledger.balance(store, &account) {
                Ok(balance) => json_response(StatusCode::OK, account_json(&account, balance)),
                Err(e) => error_response(&e),
            },
            Operation::Withdraw { account, amount } => match ledger.withdraw(store, &account, amount) {
                Ok(balance) => json_response(StatusCode::OK, account_json(&account, balance)),
                Err(e) => error_response(&e),
            },
            Operation::Transfer { from, to, amount } => match ledger.transfer(store, &from, &to, amount) {
                Ok((debited, credited)) => json_response(
                    StatusCode::OK,
                    json!({ "from": account_json(&from, debited), "to": account_json(&to, credited), "amount": amount }),
                ),
                Err(e) => error_response(&e),
            },
            Operation::Audit => match ledger.audit(store) {
                Ok(accounts) => {
                    let total: i64 = accounts.iter().map(|(_, b)| b.0).sum();
                    let accounts: Vec<Value> = accounts.iter().map(|(id, b)| account_json(id, *b)).collect();
                    json_response(
                        StatusCode::OK,
                        json!({ "locking": ledger.locking().name(), "accounts": accounts, "total": total }),
                    )
                }
                Err(e) => error_response(&e),
            },
        }
    }
}

/// What a `/api/bank/...` request asks for: an operation to run, or an answer now.
pub(crate) fn parse(request: &Request, rest: &[&str]) -> Result<Operation, Response> {
    let get = matches!(request.method, Method::Get | Method::Head);
    let post = request.method == Method::Post;
    match rest {
        ["accounts"] if post => {
            let body = json_body(request)?;
            let account = account_field(&body, "id")?;
            let balance = amount_field(&body, "balance", 0).map_err(|e| error_response(&e))?;
            Ok(Operation::Create { account, balance })
        }
        ["accounts", name] if get => Ok(Operation::Balance { account: account_name(name)? }),
        ["accounts", name, "withdraw"] if post => {
            let account = account_name(name)?;
            let body = json_body(request)?;
            let amount = amount_field(&body, "amount", 1).map_err(|e| error_response(&e))?;
            Ok(Operation::Withdraw { account, amount })
        }
        ["transfers"] if post => {
            let body = json_body(request)?;
            let (from, to) = (account_field(&body, "from")?, account_field(&body, "to")?);
            let amount = amount_field(&body, "amount", 1).map_err(|e| error_response(&e))?;
            if from == to {
                return Err(error_response(&LedgerError::SameAccount(from)));
            }
            Ok(Operation::Transfer { from, to, amount })
        }
        ["audit"] if get => Ok(Operation::Audit),
        ["accounts" | "transfers"] | ["accounts", _, "withdraw"] => Err(not_allowed("POST")),
        ["accounts", _] | ["audit"] => Err(not_allowed("GET, HEAD")),
        _ => Err(error_response(&LedgerError::BadRequest(
            "no such ledger route; see docs/protocol.md, \"The ledger\"".to_string(),
        ))
        .status_now(StatusCode::NOT_FOUND)),
    }
}

/// Parses an amount of cents: a JSON integer from `min` to [`MAX_AMOUNT`]. Strings, floats
/// (`25.5`, and `2500.0` too: cents are whole), negatives and numbers past the limit are
/// refused with a message that says which.
pub(crate) fn parse_amount(value: Option<&Value>, field: &str, min: i64) -> Result<Cents, LedgerError> {
    let bad = |why: String| LedgerError::BadAmount(format!("'{field}' {why}"));
    let number = match value {
        None | Some(Value::Null) => return Err(bad("is missing; give a whole number of cents".into())),
        Some(Value::Number(n)) => n,
        Some(other) => return Err(bad(format!("must be a whole number of cents, not {other}"))),
    };
    let cents = match (number.as_i64(), number.as_u64()) {
        (Some(n), _) => n,
        (None, Some(_)) => return Err(bad(format!("is too large: at most {MAX_AMOUNT} cents"))),
        (None, None) => {
            let f = number.as_f64().unwrap_or(f64::NAN);
            return Err(if f.fract() == 0.0 && f.abs() > MAX_AMOUNT as f64 {
                bad(format!("is too large: at most {MAX_AMOUNT} cents"))
            } else {
                bad(format!("must be a whole number of cents, not {number}"))
            });
        }
    };
    if cents < min {
        let least = if min == 0 { "0 or more" } else { "1 or more" };
        return Err(bad(format!("must be {least} cents, not {cents}")));
    }
    if cents > MAX_AMOUNT {
        return Err(bad(format!("is too large: at most {MAX_AMOUNT} cents")));
    }
    Ok(Cents(cents))
}

fn amount_field(body: &Value, field: &str, min: i64) -> Result<Cents, LedgerError> {
    parse_amount(body.get(field), field, min)
}

fn account_name(name: &str) -> Result<AccountId, Response> {
    AccountId::new(name).map_err(|e| error_response(&e))
}

fn account_field(body: &Value, field: &str) -> Result<AccountId, Response> {
    match body.get(field) {
        Some(Value::String(name)) => account_name(name),
        _ => Err(error_response(&LedgerError::BadRequest(format!("'{field}' must be an account name (a string)")))),
    }
}

fn json_body(request: &Request) -> Result<Value, Response> {
    let content_type = request.headers.get("content-type").map(media_type).unwrap_or_default();
    if content_type != "application/json" {
        return Err(error_response(&LedgerError::BadRequest(
            "send the body as JSON with 'Content-Type: application/json'".to_string(),
        ))
        .status_now(StatusCode::UNSUPPORTED_MEDIA_TYPE));
    }
    match serde_json::from_slice::<Value>(&request.body) {
        Ok(body @ Value::Object(_)) => Ok(body),
        Ok(_) => Err(error_response(&LedgerError::BadRequest("the body must be a JSON object".to_string()))),
        Err(e) => Err(error_response(&LedgerError::BadRequest(format!("body is not valid JSON: {e}")))),
    }
}

fn account_json(account: &AccountId, balance: Cents) -> Value {
    json!({ "id": account, "balance": balance })
}

fn json_response(status: StatusCode, body: Value) -> Response {
    crate::chat::json_response(status, to_json(&body))
}

/// The status of each refusal: 4xx for what the client can fix, 503 for what a retry can.
pub(crate) fn status_of(error: &LedgerError) -> StatusCode {
    match error {
        LedgerError::BadAccountName
        | LedgerError::BadAmount(_)
        | LedgerError::BadRequest(_)
        | LedgerError::SameAccount(_) => StatusCode::BAD_REQUEST,
        LedgerError::UnknownAccount(_) => StatusCode::NOT_FOUND,
        LedgerError::AccountExists(_) => StatusCode::CONFLICT,
        LedgerError::InsufficientFunds { .. } | LedgerError::BankFull => StatusCode::UNPROCESSABLE_ENTITY,
        LedgerError::Busy(_) | LedgerError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// `{"error": "...", "code": "..."}`, plus the balance and amount for insufficient funds.
pub(crate) fn error_response(error: &LedgerError) -> Response {
    let mut body = json!({ "error": error.to_string(), "code": error.code() });
    if let LedgerError::InsufficientFunds { account, balance, amount } = error {
        body["account"] = json!(account);
        body["balance"] = json!(balance);
        body["amount"] = json!(amount);
    }
    let response = json_response(status_of(error), body);
    if status_of(error) == StatusCode::SERVICE_UNAVAILABLE {
        response.header("Retry-After", "1")
    } else {
        response
    }
}

/// Replaces a response's status (the error shapes above are shared by several statuses).
trait StatusNow {
    fn status_now(self, status: StatusCode) -> Self;
}

impl StatusNow for Response {
    fn status_now(mut self, status: StatusCode) -> Response {
        self.status = status;
        self
    }
}

fn not_allowed(allow: &'static str) -> Response {
    error_response(&LedgerError::BadRequest("method not allowed on this route".to_string()))
        .status_now(StatusCode::METHOD_NOT_ALLOWED)
        .header("Allow", allow)
}
