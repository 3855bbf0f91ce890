//! `#[green::main]` and `#[green::test]`: run a function's body as the main fiber of a
//! green runtime, as `#[tokio::main]` and `#[tokio::test]` do for tokio.
//!
//! Use them through the `green` crate (its `macros` feature, on by default), which
//! documents them with examples. This crate needs no parser: the attributes accept a
//! plain `fn` with no parameters and no generics, keep its signature, and replace its
//! body with one that builds the runtime and runs the old body in its main fiber.
//!
//! ```text
//!   #[green::main(workers = 2)]          fn main() -> io::Result<()> {
//!   fn main() -> io::Result<()> {   ─►       ::green::Runtime::builder().workers(2).build()
//!       body                                     .expect(..).run(move || -> io::Result<()> { body })
//!   }                                    }
//! ```

#![deny(unsafe_code)]
#![warn(missing_docs, rust_2018_idioms)]

use proc_macro::{Delimiter, Group, Ident, Literal, Punct, Spacing, Span, TokenStream, TokenTree};

/// Runs `fn main`'s body as the main fiber of a green runtime. See the `green` crate.
#[proc_macro_attribute]
pub fn main(args: TokenStream, item: TokenStream) -> TokenStream {
    expand("main", args, item, false).unwrap_or_else(|error| error.into_tokens())
}

/// Runs a test's body as the main fiber of a runtime of its own. See the `green` crate.
#[proc_macro_attribute]
pub fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    expand("test", args, item, true).unwrap_or_else(|error| error.into_tokens())
}

/// A compile error at a span.
struct Error {
    /// Where the error points.
    span: Span,
    /// What the error says.
    message: String,
}

impl Error {
    fn new(span: Span, message: impl Into<String>) -> Error {
        Error {
            span,
            message: message.into(),
        }
    }

    /// `::core::compile_error!("message");` with the error's span.
    fn into_tokens(self) -> TokenStream {
        let mut message = Literal::string(&self.message);
        message.set_span(self.span);
        let tokens: Vec<TokenTree> = vec![
            Punct::new(':', Spacing::Joint).into(),
            Punct::new(':', Spacing::Alone).into(),
            Ident::new("core", self.span).into(),
            Punct::new(':', Spacing::Joint).into(),
            Punct::new(':', Spacing::Alone).into(),
            Ident::new("compile_error", self.span).into(),
            Punct::new('!', Spacing::Alone).into(),
            Group::new(Delimiter::Parenthesis, TokenTree::from(message).into()).into(),
            Punct::new(';', Spacing::Alone).into(),
        ];
        tokens.into_iter().collect()
    }
}

/// The attribute's settings: each an expression for the runtime builder's method of the
/// same name.
#[derive(Default)]
struct Settings {
    /// `workers = EXPR`.
    workers: Option<TokenStream>,
    /// `stack_size = EXPR`.
    stack_size: Option<TokenStream>,
}

/// Parses `name = expr, name = expr`.
fn parse_settings(attribute: &str, args: TokenStream) -> Result<Settings, Error> {
    let mut settings = Settings::default();
    let mut tokens = args.into_iter().peekable();
    while let Some(token) = tokens.next() {
        let TokenTree::Ident(name) = &token else {
            return Err(Error::new(
                token.span(),
                format!("#[green::{attribute}] takes `workers = N` and `stack_size = BYTES`"),
            ));
        };
        match tokens.next() {
            Some(TokenTree::Punct(p)) if p.as_char() == '=' => {}
            _ => return Err(Error::new(name.span(), format!("expected `{name} = ...`"))),
        }
        let mut value = Vec::new();
        while let Some(token) = tokens.peek() {
            if matches!(token, TokenTree::Punct(p) if p.as_char() == ',') {
                tokens.next();
                break;
            }
            value.push(tokens.next().expect("peeked"));
        }
        if value.is_empty() {
            return Err(Error::new(name.span(), format!("`{name} =` needs a value")));
        }
        let value: TokenStream = value.into_iter().collect();
        let slot = match name.to_string().as_str() {
            "workers" => &mut settings.workers,
            "stack_size" => &mut settings.stack_size,
            other => {
                return Err(Error::new(
                    name.span(),
                    format!(
                        "unknown setting `{other}` of #[green::{attribute}]: it takes \
                         `workers = N` and `stack_size = BYTES`"
                    ),
                ));
            }
        };
        if slot.replace(value).is_some() {
            return Err(Error::new(name.span(), format!("`{name}` is given twice")));
        }
    }
    Ok(settings)
}

/// The parts of a plain `fn` item.
struct Function {
    /// Everything before the body: attributes, visibility, `fn`, name, `()`, return type.
    signature: Vec<TokenTree>,
    /// The return type's tokens (after `->`), if any.
    output: Option<Vec<TokenTree>>,
    /// The body, a brace group.
    body: Group,
}

/// Splits `item` into signature and body, refusing what the attribute cannot run.
fn parse_function(attribute: &str, item: TokenStream) -> Result<Function, Error> {
    let mut signature: Vec<TokenTree> = item.into_iter().collect();
    let body = match signature.pop() {
        Some(TokenTree::Group(group)) if group.delimiter() == Delimiter::Brace => group,
        other => {
            let span = other.map_or_else(Span::call_site, |t| t.span());
            return Err(Error::new(
                span,
                format!("#[green::{attribute}] goes on a `fn`"),
            ));
        }
    };
    let position = |word: &str| {
        signature
            .iter()
            .position(|t| matches!(t, TokenTree::Ident(i) if i.to_string() == word))
    };
    let Some(fn_at) = position("fn") else {
        return Err(Error::new(
            body.span(),
            format!("#[green::{attribute}] goes on a `fn`"),
        ));
    };
    if let Some(at) = position("async") {
        return Err(Error::new(
            signature[at].span(),
            format!(
                "#[green::{attribute}] runs a plain `fn`: green runs synchronous code in \
                 fibers (call `green::await_blocking(future)` to wait for a future); \
                 remove `async`"
            ),
        ));
    }
    // `fn name ( ) -> ...`: no generics, no parameters.
    match signature.get(fn_at + 2) {
        Some(TokenTree::Group(params)) if params.delimiter() == Delimiter::Parenthesis => {
            if !params.stream().is_empty() {
                return Err(Error::new(
                    params.span(),
                    format!("#[green::{attribute}] takes a `fn` with no parameters"),
                ));
            }
        }
        Some(other) => {
            return Err(Error::new(
                other.span(),
                format!("#[green::{attribute}] takes a `fn` with no generic parameters"),
            ));
        }
        None => {
            return Err(Error::new(
                body.span(),
                "expected the function's parameters",
            ));
        }
    }
    let rest = &signature[fn_at + 3..];
    let output = match rest {
        [] => None,
        [TokenTree::Punct(dash), TokenTree::Punct(arrow), ty @ ..]
            if dash.as_char() == '-' && arrow.as_char() == '>' =>
        {
            if ty
                .iter()
                .any(|t| matches!(t, TokenTree::Ident(i) if i.to_string() == "where"))
            {
                return Err(Error::new(dash.span(), "a `where` clause is not supported"));
            }
            Some(ty.to_vec())
        }
        [other, ..] => {
            return Err(Error::new(
                other.span(),
                "unexpected tokens before the body",
            ));
        }
    };
    Ok(Function {
        signature,
        output,
        body,
    })
}

/// Builds the new item.
fn expand(
    attribute: &str,
    args: TokenStream,
    item: TokenStream,
    test: bool,
) -> Result<TokenStream, Error> {
    let settings = parse_settings(attribute, args)?;
    let function = parse_function(attribute, item)?;
    // The closure: `move || -> OUTPUT BODY`, the old body as it is.
    let mut closure = String::from("move || ");
    if let Some(output) = &function.output {
        closure.push_str("-> ");
        closure.push_str(&output.iter().cloned().collect::<TokenStream>().to_string());
    }
    let closure: TokenStream = closure.parse().expect("a closure head");
    let closure: TokenStream = closure
        .into_iter()
        .chain(std::iter::once(TokenTree::Group(function.body.clone())))
        .collect();
    // The runtime: `green::run` for the defaults in `main`, a builder otherwise (a test
    // gets a runtime of its own, so that tests running in parallel do not share one).
    let runner = if settings.workers.is_none() && settings.stack_size.is_none() && !test {
        "::green::run".to_owned()
    } else {
        let mut builder = String::from("::green::Runtime::builder()");
        for (name, value) in [
            ("workers", &settings.workers),
            ("stack_size", &settings.stack_size),
        ] {
            if let Some(value) = value {
                builder.push_str(&format!(".{name}({value})"));
            }
        }
        builder.push_str(&format!(
            ".build().expect(\"#[green::{attribute}]: cannot build the runtime\").run"
        ));
        builder
    };
    let mut call: TokenStream = runner.parse().expect("a runtime expression");
    call.extend(std::iter::once(TokenTree::Group(Group::new(
        Delimiter::Parenthesis,
        closure,
    ))));
    let mut body = Group::new(Delimiter::Brace, call);
    body.set_span(function.body.span());
    let mut output = TokenStream::new();
    if test {
        output.extend(
            "#[::core::prelude::v1::test]"
                .parse::<TokenStream>()
                .expect("#[test]"),
        );
    }
    output.extend(function.signature);
    output.extend(std::iter::once(TokenTree::Group(body)));
    Ok(output)
}
