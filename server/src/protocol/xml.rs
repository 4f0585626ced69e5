//! XML encoding of generated output types, in EC2's style.

use super::types::{Blob, Timestamp};

pub const NAMESPACE: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";

/// A small append-only XML writer; output shapes are trees of known element names, so
/// nothing more than escaping text is needed.
#[derive(Default)]
pub struct XmlWriter {
    buf: String,
}

impl XmlWriter {
    pub fn new() -> Self {
        Self {
            buf: String::with_capacity(1024),
        }
    }

    pub fn into_string(self) -> String {
        self.buf
    }

    pub fn open(&mut self, name: &str) {
        self.buf.push('<');
        self.buf.push_str(name);
        self.buf.push('>');
    }

    pub fn close(&mut self, name: &str) {
        self.buf.push_str("</");
        self.buf.push_str(name);
        self.buf.push('>');
    }

    pub fn text(&mut self, s: &str) {
        self.buf.push_str(&quick_xml::escape::escape(s));
    }

    pub fn raw(&mut self, s: &str) {
        self.buf.push_str(s);
    }

    pub fn field<T: ToXml + ?Sized>(&mut self, name: &str, value: Option<&T>) {
        if let Some(v) = value {
            v.write_element(self, name);
        }
    }

    pub fn list<T: ToXml>(&mut self, name: &str, item: &str, value: Option<&Vec<T>>) {
        if let Some(items) = value {
            self.open(name);
            for i in items {
                i.write_element(self, item);
            }
            self.close(name);
        }
    }

    /// `<name><entry><key>k</key><value>v</value></entry>…</name>`, or the entries alone
    /// when flattened (each named `name`).
    pub fn map<V: ToXml>(
        &mut self,
        name: &str,
        key: &str,
        value_name: &str,
        flattened: bool,
        value: Option<&std::collections::BTreeMap<String, V>>,
    ) {
        let Some(entries) = value else { return };
        let entry = if flattened { name } else { "entry" };
        if !flattened {
            self.open(name);
        }
        for (k, v) in entries {
            self.open(entry);
            k.write_element(self, key);
            v.write_element(self, value_name);
            self.close(entry);
        }
        if !flattened {
            self.close(name);
        }
    }

    pub fn timestamp(&mut self, name: &str, value: Option<&Timestamp>, format: &str) {
        if let Some(t) = value {
            self.open(name);
            let text = match format {
                "unixTimestamp" => t.to_epoch_seconds(),
                "rfc822" => t.to_http_date(),
                _ => t.to_iso(),
            };
            self.raw(&text);
            self.close(name);
        }
    }

    pub fn nested_list<T: ToXml>(
        &mut self,
        name: &str,
        item: &str,
        inner_item: &str,
        value: Option<&Vec<Vec<T>>>,
    ) {
        if let Some(lists) = value {
            self.open(name);
            for l in lists {
                self.list(item, inner_item, Some(l));
            }
            self.close(name);
        }
    }

    pub fn flat_list<T: ToXml>(&mut self, item: &str, value: Option<&Vec<T>>) {
        for i in value.into_iter().flatten() {
            i.write_element(self, item);
        }
    }
}

/// Encoding of one value as XML.
pub trait ToXml {
    /// The contents of the element; structures write their members here.
    fn write_members(&self, w: &mut XmlWriter);

    fn write_element(&self, w: &mut XmlWriter, name: &str) {
        w.open(name);
        self.write_members(w);
        w.close(name);
    }
}

impl ToXml for String {
    fn write_members(&self, w: &mut XmlWriter) {
        w.text(self);
    }
}

impl ToXml for str {
    fn write_members(&self, w: &mut XmlWriter) {
        w.text(self);
    }
}

impl ToXml for bool {
    fn write_members(&self, w: &mut XmlWriter) {
        w.raw(if *self { "true" } else { "false" });
    }
}

macro_rules! display_xml {
    ($($t:ty),*) => {$(
        impl ToXml for $t {
            fn write_members(&self, w: &mut XmlWriter) {
                w.raw(&self.to_string());
            }
        }
    )*};
}
display_xml!(i32, i64);

/// Non-finite numbers are spelled as the AWS protocols spell them.
impl ToXml for f64 {
    fn write_members(&self, w: &mut XmlWriter) {
        if self.is_nan() {
            w.raw("NaN");
        } else if self.is_infinite() {
            w.raw(if *self > 0.0 { "Infinity" } else { "-Infinity" });
        } else {
            w.raw(&self.to_string());
        }
    }
}

impl<T: ToXml> ToXml for Box<T> {
    fn write_members(&self, w: &mut XmlWriter) {
        (**self).write_members(w);
    }
}

impl ToXml for Blob {
    fn write_members(&self, w: &mut XmlWriter) {
        use base64::Engine;
        w.raw(&base64::engine::general_purpose::STANDARD.encode(&self.0));
    }
}

impl ToXml for Timestamp {
    fn write_members(&self, w: &mut XmlWriter) {
        w.raw(&self.to_iso());
    }
}

/// `<{Action}Response xmlns=…><requestId>…</requestId>…</{Action}Response>`.
pub fn response<T: ToXml>(action: &str, request_id: &str, output: &T) -> String {
    let mut w = XmlWriter::new();
    w.raw("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<");
    w.raw(action);
    w.raw("Response xmlns=\"");
    w.raw(NAMESPACE);
    w.raw("\">");
    w.open("requestId");
    w.text(request_id);
    w.close("requestId");
    output.write_members(&mut w);
    w.raw("</");
    w.raw(action);
    w.raw("Response>");
    w.into_string()
}

/// The EC2 error envelope.
pub fn error(code: &str, message: &str, request_id: &str) -> String {
    let mut w = XmlWriter::new();
    w.raw("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    w.open("Response");
    w.open("Errors");
    w.open("Error");
    w.open("Code");
    w.text(code);
    w.close("Code");
    w.open("Message");
    w.text(message);
    w.close("Message");
    w.close("Error");
    w.close("Errors");
    w.open("RequestID");
    w.text(request_id);
    w.close("RequestID");
    w.close("Response");
    w.into_string()
}

/// A query-protocol (IAM) response: `<{Action}Response xmlns=…>`, the output's members in
/// `<{wrapper}>` when the model names one, then `<ResponseMetadata><RequestId>`.
pub fn query_response<T: ToXml>(
    namespace: &str,
    action: &str,
    result_wrapper: Option<&str>,
    request_id: &str,
    output: &T,
) -> String {
    let mut w = XmlWriter::new();
    w.raw("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<");
    w.raw(action);
    w.raw("Response xmlns=\"");
    w.text(namespace);
    w.raw("\">");
    if let Some(wrapper) = result_wrapper {
        output.write_element(&mut w, wrapper);
    }
    w.open("ResponseMetadata");
    w.open("RequestId");
    w.text(request_id);
    w.close("RequestId");
    w.close("ResponseMetadata");
    w.raw("</");
    w.raw(action);
    w.raw("Response>");
    w.into_string()
}

/// The query-protocol error envelope: `<ErrorResponse xmlns=…><Error><Type>Sender|Receiver`…
pub fn query_error(
    namespace: &str,
    sender_fault: bool,
    code: &str,
    message: &str,
    request_id: &str,
) -> String {
    let mut w = XmlWriter::new();
    w.raw("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ErrorResponse xmlns=\"");
    w.text(namespace);
    w.raw("\">");
    w.open("Error");
    w.open("Type");
    w.raw(if sender_fault { "Sender" } else { "Receiver" });
    w.close("Type");
    w.open("Code");
    w.text(code);
    w.close("Code");
    w.open("Message");
    w.text(message);
    w.close("Message");
    w.close("Error");
    w.open("RequestId");
    w.text(request_id);
    w.close("RequestId");
    w.raw("</ErrorResponse>");
    w.into_string()
}

/// Operations whose model has no output shape answer with just the request id.
impl ToXml for () {
    fn write_members(&self, _w: &mut XmlWriter) {}
}
